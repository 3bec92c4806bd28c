"""`ssah worker`: a Celery worker for the production layout (same as `celery -A worker.app worker`).

``--gpus 0,1,...`` starts one worker process per GPU, each seeing only its GPU (``CUDA_VISIBLE_DEVICES``)
and consuming the queues of its GPU's memory class (``service/gpu_routing.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a Celery worker (production layout)",
        description="Consume jobs from the broker (SSAH_BROKER_URL) and run them; also runs the reconciler.",
    )
    parser.add_argument(
        "--queues",
        default=None,
        help="comma list: gpu (audits, evaluations, fine-tunes), gpu-<class>, cpu (comparisons); default gpu,cpu, "
        "or with --gpu-class the queues of that class and the smaller ones (SSAH_GPU_CLASSES)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once (1 per GPU)")
    parser.add_argument(
        "--pool",
        choices=("prefork", "solo", "threads"),
        default="prefork",
        help="prefork: a crashed job process is requeued at once",
    )
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument(
        "--gpus",
        default=None,
        metavar="0,1,...",
        help="one worker process per GPU index, pinned with CUDA_VISIBLE_DEVICES, consuming its memory class's queues",
    )
    parser.add_argument(
        "--gpu-class",
        default=None,
        metavar="80g",
        help="this worker's GPU memory class (one of SSAH_GPU_CLASSES); default: read from nvidia-smi with --gpus",
    )
    parser.add_argument(
        "--hostname", default=None, help="Celery node name (default celery@HOST; gpuN@HOST with --gpus)"
    )
    parser.set_defaults(run=run)


def gpu_memory(run_command: Callable[..., str] = subprocess.check_output) -> dict[int, int]:
    """Total memory in bytes of each GPU by index, from nvidia-smi (torch is never initialised in this parent)."""
    text = run_command(
        ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"], text=True, timeout=30
    )
    memory = {}
    for line in text.strip().splitlines():
        index, mebibytes = (part.strip() for part in line.split(","))
        memory[int(index)] = int(float(mebibytes)) * 2**20
    return memory


@dataclass(frozen=True)
class GpuWorker:
    gpu: int
    gpu_class: str | None
    queues: list[str]
    argv: list[str]
    env: dict[str, str]


def plan_gpu_workers(
    gpus: list[int],
    args: argparse.Namespace,
    class_names: list[str],
    environ: Mapping[str, str],
    memory: Callable[[], dict[int, int]] = gpu_memory,
) -> list[GpuWorker]:
    """One worker process per GPU: its command, its environment (only that GPU visible) and its queues."""
    from service.gpu_routing import GpuClass, class_of_memory, gpu_classes, worker_queues

    classes = gpu_classes(class_names)
    declared = GpuClass.parse(args.gpu_class) if args.gpu_class else None
    if declared is not None and classes and declared not in classes:
        raise ValueError(f"--gpu-class {args.gpu_class} is not one of SSAH_GPU_CLASSES ({', '.join(class_names)})")
    sizes = memory() if classes and declared is None else {}
    missing = [gpu for gpu in gpus if classes and declared is None and gpu not in sizes]
    if missing:
        raise ValueError(f"nvidia-smi lists no GPU {', '.join(map(str, missing))}; GPUs here: {sorted(sizes)}")
    planned = []
    for gpu in gpus:
        own = declared if declared is not None else (class_of_memory(sizes[gpu], classes) if classes else None)
        queues = args.queues.split(",") if args.queues else worker_queues(own, classes)
        env = {**environ, "CUDA_VISIBLE_DEVICES": str(gpu), "SSAH_DEVICE": "cuda"}
        argv = [sys.executable, "-m", "ssah.cli", "worker", "--queues", ",".join(queues), "--concurrency", "1"]
        argv += ["--pool", args.pool, "--loglevel", args.loglevel, "--hostname", f"gpu{gpu}@%h"]
        planned.append(GpuWorker(gpu, own.queue.removeprefix("gpu-") if own else None, queues, argv, env))
    return planned


def supervise(planned: list[GpuWorker], popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> int:
    """Start every planned worker; forward SIGTERM/SIGINT to them; when one exits, stop the others (warm
    shutdown: their jobs finish or are redelivered) and return its exit status."""
    children = [popen(worker.argv, env=worker.env) for worker in planned]
    for worker, child in zip(planned, children):
        print(
            f"ssah worker: GPU {worker.gpu} (class {worker.gpu_class}) pid {child.pid} queues {','.join(worker.queues)}"
        )

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            ended = [child for child in children if child.poll() is not None]
            if ended:
                break
            time.sleep(0.5)
        forward(signal.SIGTERM, None)
        for child in children:
            child.wait()
        return ended[0].returncode or 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from service.settings import get_settings

    class_names = list(get_settings().gpu_classes)
    if args.gpus:
        gpus = [int(part) for part in args.gpus.split(",") if part.strip()]
        return supervise(plan_gpu_workers(gpus, args, class_names, os.environ))
    queues = args.queues
    if queues is None:
        if args.gpu_class:
            from service.gpu_routing import GpuClass, gpu_classes, worker_queues

            queues = ",".join(worker_queues(GpuClass.parse(args.gpu_class), gpu_classes(class_names)))
        else:
            queues = "gpu,cpu"
    from worker.app import app

    argv = ["worker", "-Q", queues, "-c", str(args.concurrency), f"--pool={args.pool}", f"--loglevel={args.loglevel}"]
    if args.hostname:
        argv += ["-n", args.hostname]
    app.worker_main(argv)
    return 0
