"""Training (paper Alg. 1): ``vega3d train CONFIG`` and the pieces it is made of."""

from vega3d.training.config import TrainConfig, parse_config, read_config
from vega3d.training.data import ConversationDataset, collate, read_records, to_messages
from vega3d.training.trainer import Vega3DTrainer, build_trainer, parameter_groups, train

__all__ = [
    "ConversationDataset", "TrainConfig", "Vega3DTrainer", "build_trainer", "collate",
    "parameter_groups", "parse_config", "read_config", "read_records", "to_messages", "train",
]
