"""Training on several processes (gloo on the CPU, two processes): the same step as one process of the
global batch, a torchrun run of the command line, stopping together, and a lost process."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_dmd.checkpoint import load_model
from napari_dmd.cli import main
from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.distributed import World, current_world, split_batch
from napari_dmd.errors import DataError
from napari_dmd.io import write_image
from napari_dmd.training import Trainer

from synthetic import make_case

PATCH = (32, 32, 32)  # 2 + 2 patches whose labeled and unlabeled parts are normalised apart (SPLIT_MIN_VALUES)
STEPS = 1  # later steps amplify rounding (a batch in another order changes the loss of step 2 by 3e-4)
LABELED, UNLABELED = 2, 2  # the global batch


def _config() -> TrainConfig:
    return TrainConfig(iterations=STEPS, patch_size=PATCH, labeled_batch=LABELED, unlabeled_batch=UNLABELED,
                       precision="fp32", seed=3)


def _global_batches() -> list[dict[str, np.ndarray]]:
    """The patches of every step, labeled first; the same for one process and for two."""
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(STEPS):
        image = rng.normal(size=(LABELED + UNLABELED, 1, *PATCH)).astype(np.float32)
        label = (image[:LABELED] > 0.3).astype(np.uint8)
        image[:LABELED] += label  # something to learn
        mask = np.ones_like(label, dtype=np.float32)
        mask[0, :, :4] = 0  # some voxels not reviewed
        batches.append({"image": image, "label": label, "mask": mask})
    return batches


class _Fixed:
    """Stands in for the patch sampler: this process's share of the fixed global batches."""

    def __init__(self, rank: int, size: int):
        self.batches, self.rank, self.size = _global_batches(), rank, size

    def batch(self, n_labeled: int, n_unlabeled: int) -> dict[str, np.ndarray]:
        b = self.batches.pop(0)
        lab = slice(self.rank * n_labeled, (self.rank + 1) * n_labeled)
        unl = slice(LABELED + self.rank * n_unlabeled, LABELED + (self.rank + 1) * n_unlabeled)
        return {"image": np.concatenate([b["image"][lab], b["image"][unl]]), "label": b["label"][lab],
                "mask": b["mask"][lab]}


def _state(t: Trainer) -> list[torch.Tensor]:
    return [v.detach().clone() for net in t.model.nets for v in net.state_dict().values()]


def _train(world: World) -> tuple[list[tuple[float, ...]], list[torch.Tensor], list[torch.Tensor]]:
    """Losses of the steps, and the weights and batch-norm statistics before and after them."""
    cases = [make_case(s) for s in range(2)]
    t = Trainer([Volume.create(*cases[0])], [Volume.create(cases[1][0])], _config(), world=world)
    t.sampler = _Fixed(world.rank, world.size)
    t.settle_statistics = lambda iteration: None  # the step is compared; settling draws patches of its own
    for net in t.model.nets:
        net.dropout.p = 0.0  # dropout masks cannot match between a batch of 4 and two of 2
    before = _state(t)
    losses = [(p.sup_loss, p.distill_loss, p.loss) for p in t.run()]
    return losses, before, _state(t)


def _rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.save(_train(current_world()), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _update(after: list[torch.Tensor], before: list[torch.Tensor], names: list[str], kind: str) -> torch.Tensor:
    """What one step changed: of the parameters (``kind`` "parameters") or of the batch-norm statistics."""
    stats = ("running_mean", "running_var")
    return torch.cat([(a - b).flatten() for a, b, n in zip(after, before, names)
                      if a.is_floating_point() and (n.endswith(stats) == (kind == "statistics"))])


def test_a_step_on_two_processes_is_the_step_of_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    one_losses, initial, one_state = _train(World())
    names = [k for net in Trainer([Volume.create(*make_case(0))], [], _config(), world=World()).model.nets
             for k in net.state_dict()]
    for rank in range(2):
        losses, before, state = torch.load(tmp_path / f"rank{rank}.pt")
        np.testing.assert_allclose(losses, one_losses, rtol=1e-5)  # the Dice of the global batch
        assert all(torch.equal(a, b) for a, b in zip(before, initial))  # the same networks to start from
        assert all(torch.equal(a, b) for a, b in zip(state, one_state) if not a.is_floating_point())
        # batch-norm statistics: of the whole batch, to rounding
        torch.testing.assert_close(_update(state, before, names, "statistics"),
                                   _update(one_state, initial, names, "statistics"), rtol=1e-3, atol=1e-6)
        # the weight update: conv weights before a batch norm and their biases have near-zero gradient
        # components made of rounding, so one process alone moves them by ~2 % (of the update's norm)
        # with another thread count; a gradient of the wrong scale or of half the batch is off by 50 % or more
        got, want = _update(state, before, names, "parameters"), _update(one_state, initial, names, "parameters")
        assert float((got - want).norm() / want.norm()) < 0.1


def test_the_global_batch_must_split_evenly():
    assert split_batch(4, 2, 2) == (2, 1)
    with pytest.raises(DataError, match="multiples of 2"):
        split_batch(1, 1, 2)


# ------------------------------------------------------------------ torchrun and the command line
@pytest.fixture
def dataset(tmp_path):
    for k in range(3):
        img, lab = make_case(k)
        write_image(tmp_path / "images" / f"case{k}.nii.gz", img)
        if k < 2:
            write_image(tmp_path / "labels" / f"case{k}.nii.gz", lab)
    return tmp_path


def _torchrun(dataset: Path, run: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "napari_dmd", "train", "--images", str(dataset / "images"), "--labels",
           str(dataset / "labels"), "--out", str(run), "--patch", "16", "16", "16", "--precision", "fp32", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env,
                            start_new_session=True)


def _logged(run: Path) -> list[dict]:
    path = run / "log.csv"
    return list(csv.DictReader(path.open(encoding="utf-8"))) if path.exists() else []


def _wait_for_steps(proc: subprocess.Popen, run: Path, steps: int, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while len(_logged(run)) < steps and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_logged(run)) >= steps, proc.communicate(timeout=30)


def _worker(proc: subprocess.Popen, rank: int) -> int:
    """The pid of the torchrun worker of ``rank``."""
    for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(child)
    raise AssertionError(f"no worker of rank {rank}")


def test_torchrun_run_of_the_command_line_resumes_a_run_of_one_process_and_is_resumed_by_one(dataset):
    run = dataset / "run"
    common = ["--images", str(dataset / "images"), "--labels", str(dataset / "labels"), "--out", str(run)]
    assert main(["train", *common, "--iterations", "2", "--patch", "16", "16", "16", "--precision", "fp32"]) == 0
    proc = _torchrun(dataset, run, "--iterations", "4", "--init", str(run / "model.pt"), "--resume")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.count("training on 2 labeled + 1 unlabeled") == 1  # rank 0 alone prints
    assert out.count("model written to") == 1
    assert load_model(run / "model.pt", "cpu").iteration == 4
    assert json.loads((run / "config.json").read_text())["runtime"]["processes"] == 2
    assert main(["train", *common, "--iterations", "5", "--init", str(run / "model.pt"), "--resume"]) == 0
    model = load_model(run / "model.pt", "cpu")
    assert model.iteration == 5 and model.config.labeled_batch == 2
    assert [r["iteration"] for r in _logged(run)] == ["1", "2", "3", "4", "5"]  # one log, each step once
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["config.json", "data.json",
                                                                                    "log.csv", "model.pt"]


def test_a_signal_to_one_process_stops_every_process_with_one_checkpoint(dataset):
    run = dataset / "run"
    proc = _torchrun(dataset, run, "--iterations", "100000", "--checkpoint-every", "100000")
    _wait_for_steps(proc, run, 2)
    os.kill(_worker(proc, 1), signal.SIGTERM)  # rank 0 gets no signal; it must stop and write the checkpoint
    _, err = proc.communicate(timeout=60)
    assert "SIGTERM: interrupted at iteration" in err and "napari_dmd/" not in err  # no traceback of ours
    reached = int(_logged(run)[-1]["iteration"])
    assert load_model(run / "model.pt", "cpu").iteration == reached


def test_a_killed_process_ends_the_run_with_a_message_and_a_checkpoint(dataset):
    run = dataset / "run"
    proc = _torchrun(dataset, run, "--iterations", "100000", "--checkpoint-every", "100000")
    _wait_for_steps(proc, run, 2)
    os.kill(_worker(proc, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "another process of the run stopped or cannot be reached" in err, err
    assert "continue with --init" in err
    model = load_model(run / "model.pt", "cpu")
    assert model.iteration >= 2 and model.iteration == int(_logged(run)[-1]["iteration"])
