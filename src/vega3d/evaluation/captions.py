"""Language metrics: Scan2Cap dense captioning and ScanQA question answering.

The metrics are pycocoevalcap's scorers (``Cider`` is CIDEr-D: sigma 6, clipped counts, x10, IDF from
the references being evaluated; ``Bleu`` is corpus-level with the 'closest' reference length;
``Rouge`` is ROUGE-L with beta 1.2; ``Meteor`` runs METEOR 1.5 under Java). This module only writes the
conventions around them: which text is compared with which, and how captions are normalised.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading

import numpy as np

from vega3d.evaluation.boxes import box_iou_3d, parse_box, read_annotations_with_boxes
from vega3d.evaluation.inputs import (
    EvaluationInputError,
    check_known,
    index_records,
    read_annotations,
    read_predictions,
)
from vega3d.evaluation.tally import check_convention

SCAN2CAP_IOU = 0.5


@functools.cache
def _meteor():
    """One METEOR (Java) process per Python process: loading its 62 MB paraphrase table dominates its cost.

    pycocoevalcap's ``Meteor`` with the JVM's throughput collector added to its command: the same scores for
    about 1 s (13%) less CPU than the default G1 collector while the table's millions of objects are built.
    """
    from pycocoevalcap.meteor import meteor

    class Meteor(meteor.Meteor):
        def __init__(self):
            self.meteor_cmd = ["java", "-jar", "-Xmx2G", "-XX:+UseParallelGC", meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en",
                               "-norm"]
            self.meteor_p = subprocess.Popen(self.meteor_cmd, cwd=os.path.dirname(os.path.abspath(meteor.__file__)),
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.lock = threading.Lock()

    return Meteor()


def java_available() -> bool:
    return shutil.which("java") is not None


def language_metrics(references: dict, candidates: dict, with_meteor: bool | None = None) -> dict:
    """CIDEr, BLEU-1..4, ROUGE-L (and METEOR) x100 of ``candidates[id]`` (a string) against the
    ``references[id]`` (a list of strings). ``with_meteor=None`` runs METEOR when Java is present."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = list(references)
    refs = {i: list(references[i]) for i in ids}
    hyps = {i: [candidates[i]] for i in ids}
    metrics = {"CIDEr": Cider().compute_score(refs, hyps)[0]}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    metrics.update({f"BLEU-{n}": value for n, value in enumerate(bleu, start=1)})
    metrics["ROUGE-L"] = Rouge().compute_score(refs, hyps)[0]
    if with_meteor is None:
        with_meteor = java_available()
    if with_meteor:
        if not java_available():
            raise EvaluationInputError("METEOR needs Java ('java' not found on PATH); pass with_meteor=False")
        # METEOR talks to Java line by line: a newline inside a text would break the protocol.
        one_line = {i: [" ".join(t.splitlines()) for t in texts] for i, texts in refs.items()}
        metrics["METEOR"] = _meteor().compute_score(one_line, {i: [" ".join(hyps[i][0].splitlines())] for i in ids})[0]
    return {name: 100.0 * float(value) for name, value in metrics.items()}


def normalize_caption(text: str, convention: str = "field") -> str:
    """Scan2Cap's caption form: lower-case, "." and "," split off as tokens, wrapped in sos ... eos.

    ``field`` joins the words with single spaces; ``released`` keeps the released script's string
    (``"sos " + s.replace(".", " . ").replace(",", " , ").lower() + " eos"``), whose double spaces become
    empty tokens in ROUGE-L (pycocoevalcap splits on " "; CIDEr and BLEU split on any whitespace).
    """
    if check_convention(convention) == "released":
        return "sos " + text.replace(".", " . ").replace(",", " , ").lower() + " eos"
    words = re.sub(r"([.,])", r" \1 ", text.lower()).split()
    return " ".join(["sos", *words, "eos"])


def score_scan2cap(predictions, annotations, with_meteor: bool | None = None, convention: str = "field") -> dict:
    """CIDEr@0.5, BLEU-4@0.5 (+ ROUGE-L@0.5, METEOR@0.5) x100 over every ground-truth object.

    Each object of the annotations (key ``"<scene_id>|<object_id>"``, references = the descriptions
    of all its records) takes the caption of the proposal of its scene with the highest IoU; if that
    IoU is below 0.5 (or the scene has no proposal) the caption is empty, and still scored. Prediction
    ids name proposals (any unique string); each prediction carries ``scene_id``, ``box``, ``caption``.
    ``convention="released"``: captions in the released script's form (see :func:`normalize_caption`).
    """
    records, boxes = read_annotations_with_boxes(annotations)
    index_records(records, ("scene_id", "object_id", "ann_id"), "Scan2Cap annotations", required=("description",))
    references: dict[str, list[str]] = {}
    for record in records:
        object_key = f"{record['scene_id']}|{record['object_id']}"
        references.setdefault(object_key, []).append(normalize_caption(record["description"], convention))
    proposals = read_predictions(predictions, required=("scene_id", "box", "caption"))
    scenes = {key.split("|")[0] for key in references}
    by_scene: dict[str, list] = {}
    for proposal in proposals.values():
        scene_id = str(proposal.fields["scene_id"])
        if scene_id not in scenes:
            raise EvaluationInputError(
                f"{proposal.where}: id {proposal.id!r} is a proposal in scene {scene_id!r}, which has no "
                "ground truth in the annotations"
            )
        box = parse_box(proposal.fields["box"], proposal.where)
        by_scene.setdefault(scene_id, []).append((box, str(proposal.fields["caption"])))
    candidates, unmatched = {}, 0
    for object_key in references:
        scene_id, object_id = object_key.split("|", 1)
        caption = None
        scene_proposals = by_scene.get(scene_id, [])
        if scene_proposals:
            ious = box_iou_3d(np.stack([box for box, _ in scene_proposals]), boxes.box(scene_id, object_id))
            best = int(np.argmax(ious))  # the first proposal among equals
            if ious[best] >= SCAN2CAP_IOU:
                caption = scene_proposals[best][1]
        unmatched += caption is None
        candidates[object_key] = normalize_caption(caption or "", convention)
    scores = language_metrics(references, candidates, with_meteor)
    metrics = {f"{name}@{SCAN2CAP_IOU}": scores[name] for name in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L") if name in scores}
    metrics.update(num_objects=len(references), num_unmatched=unmatched, num_proposals=len(proposals))
    return metrics


def score_scanqa(predictions, annotations, with_meteor: bool | None = None, convention: str = "field") -> dict:
    """CIDEr, BLEU-1..4, ROUGE-L, METEOR and EM (x100) of the answers against the reference lists.

    The language metrics compare the prediction with trailing "." removed, no other normalisation;
    EM asks whether the raw prediction (case-sensitive, "." kept) is one of the references. A question
    without prediction is scored as an empty answer and counted in ``num_missing``.
    ``convention="released"``: EM is reported as a fraction (0..1), as the released script prints it.
    """
    check_convention(convention)
    records = read_annotations(annotations)
    samples = index_records(records, ("question_id",), "ScanQA annotations", required=("answers",))
    predicted = read_predictions(predictions, required=("answer",))
    check_known(predicted, samples)
    references, candidates, exact = {}, {}, []
    for sample_id, record in samples.items():
        answers = record.get("answers")
        if not isinstance(answers, list) or not answers:
            raise EvaluationInputError(f"ScanQA annotation {sample_id!r}: needs a non-empty 'answers' list")
        raw = str(predicted[sample_id].fields["answer"]) if sample_id in predicted else ""
        references[sample_id] = [str(answer) for answer in answers]
        candidates[sample_id] = raw.rstrip(".")
        exact.append(sample_id in predicted and raw in references[sample_id])
    metrics = language_metrics(references, candidates, with_meteor)
    metrics["EM"] = (1.0 if convention == "released" else 100.0) * sum(exact) / len(exact)
    metrics.update(num_samples=len(samples), num_missing=len(samples) - len(predicted))
    return metrics
