"""The one table that maps logical axis names onto mesh axes.

Model code names axes (`embed`, `heads`, `batch`, ...). Parameters use the
plain names, activations the `act_` names, so FSDP can shard a weight's
`embed` axis over `fsdp` while activations keep `embed` whole and shard
`batch` instead. Change parallelism here, never in model files.
"""

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES = (
    # Activations.
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # Parameters.
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("positions", None),
    ("layers", None),
    ("lora_rank", None),
    ("classes", None),
)
