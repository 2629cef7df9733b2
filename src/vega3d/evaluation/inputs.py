"""Reading predictions and annotations, with errors that name the file, the line and the id.

Predictions are ONE format for every benchmark: JSON Lines, one object per line, with the sample
``id`` and the benchmark's prediction fields (``box``, ``boxes``, ``caption`` or ``answer``). The same
records may be passed as already-loaded Python dicts. Annotations are the files as the benchmarks
publish them (``.json``, ``.jsonl`` or ``.parquet``) or the loaded objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class EvaluationInputError(ValueError):
    """Malformed or inconsistent evaluation input; the message names the file/line/id at fault."""


@dataclass(frozen=True)
class Prediction:
    id: str
    fields: dict
    where: str  # "preds.jsonl line 3" or "prediction #3": where to point the user


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def source_name(source, default: str) -> str:
    """The path to name in error messages, or ``default`` for already-loaded objects."""
    return str(source) if _is_path(source) else default


def _records_with_places(source):
    """Yield ``(where, record)`` for a JSONL path or an iterable of dicts."""
    if not _is_path(source):
        for number, record in enumerate(source, start=1):
            yield f"prediction #{number}", record
        return
    path = Path(source)
    if not path.is_file():
        raise EvaluationInputError(f"predictions file not found: {path}")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield f"{path} line {number}", json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
                raise EvaluationInputError(f"{path} line {number}: not valid JSON ({reason})") from None


def read_predictions(source, required: tuple[str, ...]) -> dict[str, Prediction]:
    """Predictions by id (ids compared as strings); every record must carry ``id`` and ``required``."""
    predictions: dict[str, Prediction] = {}
    for where, record in _records_with_places(source):
        if not isinstance(record, dict) or "id" not in record:
            raise EvaluationInputError(f"{where}: expected an object with an 'id' field, got {record!r:.80}")
        sample_id = str(record["id"])
        if sample_id in predictions:
            raise EvaluationInputError(
                f"{where}: duplicated id {sample_id!r} (first seen at {predictions[sample_id].where})"
            )
        missing = [name for name in required if name not in record]
        if missing:
            raise EvaluationInputError(f"{where}: id {sample_id!r} lacks field(s) {', '.join(missing)}")
        predictions[sample_id] = Prediction(sample_id, record, where)
    return predictions


def check_known(predictions: dict[str, Prediction], known_ids) -> None:
    """A prediction for an id the annotations do not have is an error, never silently dropped."""
    for prediction in predictions.values():
        if prediction.id not in known_ids:
            raise EvaluationInputError(
                f"{prediction.where}: id {prediction.id!r} has no ground truth in the annotations"
            )


def read_annotations(source):
    """A path (``.json``, ``.jsonl``, ``.parquet``) is loaded; anything else is returned unchanged."""
    if not _is_path(source):
        return source
    path = Path(source)
    if not path.is_file():
        raise EvaluationInputError(f"annotations file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [record for _, record in _records_with_places(path)]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EvaluationInputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise EvaluationInputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


def index_records(records, id_fields: tuple[str, ...], what: str, required: tuple[str, ...] = ()) -> dict[str, dict]:
    """Annotation records by id (``id_fields`` joined with "|"); every record must carry ``required``.

    A missing field or a duplicated id is an error naming the record's position.
    """
    if not isinstance(records, list):
        raise EvaluationInputError(f"{what}: expected a list of records, got {type(records).__name__}")
    indexed: dict[str, dict] = {}
    first_seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        missing = [name for name in (*id_fields, *required) if not isinstance(record, dict) or name not in record]
        if missing:
            raise EvaluationInputError(f"{what} record #{number}: missing field(s) {', '.join(map(repr, missing))}")
        sample_id = "|".join(str(record[name]) for name in id_fields)
        if sample_id in indexed:
            raise EvaluationInputError(
                f"{what} record #{number}: duplicated id {sample_id!r} (first at record #{first_seen[sample_id]})"
            )
        indexed[sample_id] = record
        first_seen[sample_id] = number
    if not indexed:
        raise EvaluationInputError(f"{what}: no annotation records")
    return indexed
