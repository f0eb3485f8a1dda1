"""csm-studio's CSM-1B inference package: the model in plain PyTorch, its loading, codec and generator."""

from csm.models import Model, ModelArgs

__all__ = ["Model", "ModelArgs"]
