"""3D-awareness analysis: the multi-view correspondence score, NOS, correlation and plots."""

from vega3d.analysis.awareness import AwarenessReport, encode_frames, run_awareness, scene_correspondence
from vega3d.analysis.correspondence import PROTOCOLS, CorrespondenceResult, correspondence_score
from vega3d.analysis.nos import Correlation, NosTable, correlation, normalized_overall_score, read_nos_table

__all__ = [
    "PROTOCOLS", "AwarenessReport", "Correlation", "CorrespondenceResult", "NosTable", "correlation",
    "correspondence_score", "encode_frames", "normalized_overall_score", "read_nos_table", "run_awareness",
    "scene_correspondence",
]
