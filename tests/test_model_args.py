"""TransformerArgs: one head_dim field, filled in when a config leaves it out."""

import dataclasses

import pytest

from csm.models import FLAVORS, TransformerArgs, rope_tables


def test_head_dim_defaults_to_embed_dim_over_heads():
    args = TransformerArgs(num_layers=1, num_heads=8, num_kv_heads=2, embed_dim=256, intermediate_dim=512)
    assert args.head_dim == 32 and isinstance(args.head_dim, int)
    assert args == TransformerArgs(num_layers=1, num_heads=8, num_kv_heads=2, embed_dim=256, intermediate_dim=512,
                                   head_dim=32)  # fmt: skip
    assert {name: flavor.head_dim for name, flavor in FLAVORS.items()} == {"llama-1B": 64, "llama-100M": 128}


def test_an_explicit_head_dim_is_kept_and_sizes_the_rope_tables():
    args = TransformerArgs(num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128, head_dim=24)
    assert args.head_dim == 24
    cos, sin = rope_tables(args, 10)
    assert cos.shape == sin.shape == (10, 24)
    assert not hasattr(args, "head_size")
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.head_dim = 16
