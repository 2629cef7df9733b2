"""VEGA-3D: video diffusion models as latent world simulators for 3D-aware multimodal LLMs.

Data flows one way: scene -> frames -> backbone tokens -> store -> fusion -> model -> metrics.
The backbone API below is imported on first use, so ``vega3d --help`` starts without torch.
"""

__version__ = "0.1.0"
__all__ = ["Backbone", "list_backbones", "load_backbone", "register_backbone", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        import vega3d.backbones

        return getattr(vega3d.backbones, name)
    raise AttributeError(f"module 'vega3d' has no attribute {name!r}")
