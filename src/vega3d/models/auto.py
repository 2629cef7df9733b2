"""Registration of the VEGA-3D model families with transformers' Auto classes.

Each family has its own ``model_type`` (written to ``config.json``), so
``AutoModelForImageTextToText.from_pretrained(VEGA3D_DIR)`` builds our class with its adapters once
``vega3d`` is imported, and fails with transformers' unknown-model-type error where vega3d is not
installed, instead of silently building the host model and dropping the generative branch.
"""

from __future__ import annotations

DEFAULT_AUTO_CLASSES = ("AutoModelForImageTextToText",)


def register_family(model_type: str, config_cls, model_cls, auto_classes: tuple[str, ...] = DEFAULT_AUTO_CLASSES) -> None:
    """Register ``config_cls`` under ``model_type`` with ``AutoConfig`` and ``model_cls`` with each of
    ``auto_classes`` (names in ``transformers``); idempotent, so modules may be reloaded."""
    import transformers

    if config_cls.model_type != model_type:
        raise ValueError(f"{config_cls.__name__}.model_type is {config_cls.model_type!r}, not {model_type!r}")
    if getattr(model_cls, "config_class", None) is not config_cls:
        raise ValueError(f"{model_cls.__name__}.config_class must be {config_cls.__name__}")
    transformers.AutoConfig.register(model_type, config_cls, exist_ok=True)
    for name in auto_classes:
        getattr(transformers, name).register(config_cls, model_cls, exist_ok=True)
