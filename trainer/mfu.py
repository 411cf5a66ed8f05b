"""Model FLOPs utilization: achieved model FLOP/s over the hardware's peak."""

# Dense bf16 peak FLOP/s per device (chip), from vendor spec sheets.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "TPU v6": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
    # No meaningful spec for a CPU "device"; a nominal figure so MFU is still
    # comparable across CPU runs. Pass --peak_flops for your machine.
    "cpu": 1e11,
}


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float:
  if override > 0:
    return override
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in device_kind.lower():
      return flops
  return PEAK_FLOPS["cpu"]


def mfu(tokens_per_sec: float, flops_per_token: float, num_devices: int, peak_per_device: float) -> float:
  return tokens_per_sec * flops_per_token / (num_devices * peak_per_device)
