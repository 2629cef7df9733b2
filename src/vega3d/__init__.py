"""VEGA-3D: video diffusion models as latent world simulators for 3D-aware multimodal LLMs.

Data flows one way: scene -> frames -> backbone tokens -> store -> fusion -> model -> metrics.
"""

from vega3d.backbones import Backbone, list_backbones, load_backbone, register_backbone

__version__ = "0.1.0"
__all__ = ["Backbone", "list_backbones", "load_backbone", "register_backbone", "__version__"]
