"""Where a model's layers go when it loads: an accelerate device map, a per-device memory budget, disk offload.

Torch-free, like the job configs: the CLI's ``--device-map``/``--max-memory``/``--offload-folder`` flags and
the REST ``placement`` object are built from these fields (``settings_fields``). ``ssah_engine.loading``
hands them to ``from_pretrained``; ``ssah_engine.devices`` finds inputs' devices and offloaded weights.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
MEMORY_DEVICES = ("cpu", "disk", "mps")
_AMOUNT = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    """How a model is spread over devices at load time; all None: the whole model on one device."""

    device_map: str | None = field(
        default=None,
        metadata={
            "help": "spread the layers over the GPUs, CPU and disk with accelerate (auto, balanced, "
            "balanced_low_0, sequential); none: the whole model on --device",
            "choices": DEVICE_MAPS,
        },
    )
    max_memory: str | None = field(
        default=None,
        metadata={
            "help": "memory budget per device for the device map, e.g. 0=70GiB,1=70GiB,cpu=200GiB "
            "(GPU indices, cpu, disk); what fits nowhere is offloaded to disk"
        },
    )
    offload_folder: str | None = field(
        default=None, metadata={"help": "directory for the layers offloaded to disk (needed when any are)"}
    )

    def __post_init__(self):
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map must be one of {', '.join(DEVICE_MAPS)}, got {self.device_map!r}")
        if self.device_map is None and (self.max_memory is not None or self.offload_folder is not None):
            raise ValueError("max_memory and offload_folder shape a device map: give device_map too")
        self.memory_map()  # the one syntax check

    @property
    def active(self) -> bool:
        return self.device_map is not None

    def memory_map(self) -> dict[int | str, int | str] | None:
        """``max_memory`` as accelerate takes it: ``{0: "70GiB", "cpu": "200GiB"}``; None when unset."""
        if self.max_memory is None:
            return None
        budget: dict[int | str, int | str] = {}
        for part in (item.strip() for item in self.max_memory.split(",")):
            device, sep, amount = (text.strip() for text in part.partition("="))
            key: int | str = int(device) if device.isdigit() else device.lower()
            if not sep or not (isinstance(key, int) or key in MEMORY_DEVICES) or not _AMOUNT.match(amount):
                raise ValueError(
                    f"max_memory entries are DEVICE=AMOUNT (a GPU index, cpu, disk or mps; e.g. 0=20GiB), got {part!r}"
                )
            if key in budget:
                raise ValueError(f"max_memory names {device!r} twice")
            budget[key] = int(amount) if amount.isdigit() else amount.replace(" ", "")  # bytes, or "20GiB"
        if not budget:
            raise ValueError("max_memory is empty")
        return budget

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> Placement:
        """A placement from user settings (CLI flags, an API body, a stored job): unknown keys are errors."""
        values = dict(values or {})
        unknown = set(values) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown placement settings: {', '.join(sorted(unknown))}")
        return cls(**values)
