"""The run generators run synchronously here: no thread, no Qt (they never touch either)."""
from dataclasses import replace

import torch

from napari_dmd.config import RunOptions, TrainConfig
from napari_dmd.errors import DataError
from napari_dmd.jobs import (
    Control,
    Failed,
    Finished,
    ImageResult,
    Refreshed,
    Started,
    TrainJob,
    View,
    _failure,
    predict_only,
    train_and_predict,
)
from napari_dmd.pairing import Row, training_set

from synthetic import cube_case

CONFIG = TrainConfig(iterations=2, patch_size=None, labeled_batch=1, unlabeled_batch=1, device="cpu",
                     precision="fp32", checkpoint_every=1000)


def job(tmp_path, **kw):
    img0, lab0 = cube_case(0)
    img1, _ = cube_case(1)
    data = training_set([Row("a", img0, True, lab0, "a labels"), Row("b", img1, True)])
    return TrainJob(data, replace(CONFIG, **kw), RunOptions(refresh_every=1), run_dir=tmp_path)


def viewing(image: str = "a") -> Control:
    """A run's control with the dock looking at ``image``."""
    control = Control()
    control.look_at(View(image, 3))
    return control


def test_messages_in_order_and_patch_remembered_by_the_model(tmp_path):
    control = viewing()
    msgs = list(train_and_predict(job(tmp_path), control))
    kinds = [type(m).__name__ for m in msgs]
    assert kinds[:2] == ["Preparing", "Started"] and kinds[-1] == "Finished" and control.done.is_set()
    assert kinds.count("Predicting") == 2 and control._trainer is None  # the finished run holds no trainer
    assert kinds.count("Refreshed") == 2 and kinds.count("ImageResult") == 3  # the case in view, then both
    started, finished = msgs[1], msgs[-1]
    assert isinstance(started, Started) and started.labeled == 1 and started.unlabeled == 1
    assert isinstance(finished, Finished) and finished.iteration == 2 and finished.checkpoint.is_file()
    assert finished.model.config.patch_size == started.plan.patch  # saved models know their patch
    result = next(m for m in msgs if isinstance(m, ImageResult))
    assert result.labels.shape == result.disagreement.shape == (16, 32, 32) and len(result.slice_scores) == 16
    assert [m.final for m in msgs if isinstance(m, Refreshed)] == [False, True]
    again = list(predict_only(finished.model, [("b", cube_case(1)[0])], Control()))
    assert [type(m).__name__ for m in again] == ["Predicting", "ImageResult", "Refreshed", "Finished"]


def test_abort_before_the_first_step_ends_at_once_without_predictions(tmp_path):
    control = Control()
    control.abort()
    msgs = list(train_and_predict(job(tmp_path, iterations=50), control))
    assert not any(isinstance(m, ImageResult) for m in msgs)
    assert isinstance(msgs[-1], Finished) and msgs[-1].aborted and msgs[-1].iteration == 0


def test_errors_are_yielded_as_messages_not_raised(tmp_path):
    msgs = list(train_and_predict(job(tmp_path, device="cuda:7" if not torch.cuda.is_available() else "nope"),
                                  Control()))
    assert isinstance(msgs[-1], Failed) and "device" in msgs[-1].message


def test_failure_messages_say_what_to_lower():
    assert "lower the patch size or the batch" in _failure(torch.cuda.OutOfMemoryError("CUDA out of memory"),
                                                           "predicting").message
    assert _failure(DataError("labels are bad"), "training").message == "labels are bad"
    assert _failure(ValueError("boom"), "training").message.startswith("unexpected error while training")


def test_an_abort_during_a_prediction_ends_it_within_a_batch_of_windows(tmp_path):
    finished = list(train_and_predict(job(tmp_path), Control()))[-1]
    control = Control()
    big = cube_case(2, shape=(48, 64, 64))[0]
    gen = predict_only(finished.model, [("big", big), ("b", cube_case(1)[0])], control)
    assert type(next(gen)).__name__ == "Predicting"
    calls = []
    real = control.check

    def check(*args):  # the abort arrives while the first image is being predicted
        calls.append(args)
        if len(calls) == 3:
            control.abort()
        real(*args)

    control.check = check
    rest = list(gen)
    assert not any(isinstance(m, ImageResult) for m in rest)
    assert len(calls) == 3 and isinstance(rest[-1], Finished) and rest[-1].aborted


def test_time_limit_and_an_early_first_refresh(tmp_path):
    j = job(tmp_path, iterations=4)  # refreshes after every step: test_messages_in_order_...
    j.options = RunOptions(refresh_every=3, first_refresh=1)
    assert [m.iteration for m in train_and_predict(j, Control()) if isinstance(m, Refreshed)] == [1, 3, 4]
    j.options = RunOptions(refresh_every=4, first_refresh=1, minutes=1e-9)  # stops after the first step
    msgs = list(train_and_predict(j, Control()))
    assert msgs[-1].stopped and msgs[-1].iteration == 1
    assert [m.iteration for m in msgs if isinstance(m, Refreshed)] == [1]


def test_the_measured_speed_leaves_the_predictions_out(tmp_path, monkeypatch):
    import time

    from napari_dmd import inference
    from napari_dmd.training import Progress

    predict = inference.predict

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return predict(*args, **kwargs)

    monkeypatch.setattr(inference, "predict", slow)
    msgs = list(train_and_predict(job(tmp_path), viewing()))  # 2 iterations, a refresh after each
    speed, last = msgs[-1].speed, [m for m in msgs if isinstance(m, Progress)][-1]
    assert speed.precision == "fp32" and speed.setup_s > 0
    # the refresh after iteration 1 (the case in view, ≥ 0.5 s) is in the engine's elapsed time, not in the speed
    assert speed.iteration_s <= (last.elapsed - 0.45) / 2
    assert speed.predict_mvoxel_s * 2 * cube_case(0)[0].size / 1e6 >= 1.0


def test_a_refresh_on_large_data_predicts_the_slab_in_view(monkeypatch):
    from napari_dmd import jobs
    from napari_dmd.config import RANKING_SLAB
    from napari_dmd.jobs import View, refresh_items

    volume, flat = cube_case(0)[0], cube_case(1)[0][0]
    images = [("a", volume), ("b", flat)]
    whole = [(name, rows) for name, _, rows in refresh_items(images, View("a", 3), final=False)]
    assert whole == [("a", None)]  # small data: the image in view whole (every image at the end of a run)
    monkeypatch.setattr(jobs, "REFRESH_WHOLE_MVOXELS", 0)
    half = RANKING_SLAB // 2
    assert [(n, r) for n, _, r in refresh_items(images, View("a", 7), final=False)] == [("a", (7 - half, 8 + half))]
    assert refresh_items(images, View("a", 0), final=False)[0][2] == (0, half + 1)  # cut at the first slice
    last = volume.shape[0] - 1
    assert refresh_items(images, View("a", last), final=False)[0][2] == (last - half, last + 1)
    assert refresh_items(images, None, final=False) == []
    assert [(n, r) for n, _, r in refresh_items(images, View("b", 0), final=False)] == [("b", None)]  # 2D: whole
    assert [r for _, _, r in refresh_items(images, View("a", 7), final=True)] == [None, None]


def test_predictions_during_a_run_reuse_the_training_volumes_statistics(tmp_path, monkeypatch):
    from napari_dmd.data import IntensityStats

    computed = []
    of = IntensityStats.of.__func__
    monkeypatch.setattr(IntensityStats, "of", classmethod(lambda cls, image: computed.append(1) or of(cls, image)))
    msgs = list(train_and_predict(job(tmp_path), viewing()))  # 2 iterations: the case in view, then both
    assert sum(isinstance(m, ImageResult) for m in msgs) == 3 and len(computed) == 2  # once per image


def test_the_self_check_is_announced_with_its_duration(tmp_path, monkeypatch):
    from napari_dmd.plan import preparing_text

    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path))  # no verdict cached on this machine yet
    shapes = [(16, 32, 32)]
    assert preparing_text(replace(CONFIG, precision="fp32"), shapes, None) == "Setting up the networks…"
    text = preparing_text(replace(CONFIG, precision="bf16"), shapes, None)
    assert text.startswith("Checking once whether this machine computes bf16 correctly: about 20-60 s")
    assert preparing_text(replace(CONFIG, precision="bf16", patch_size=None), shapes, (0.0, 1.0, 1.0)) == \
        "Setting up the networks…"  # data the Trainer refuses: it says why


def test_every_refresh_predicts_with_statistics_settled_at_its_iteration(tmp_path, monkeypatch):
    """A refresh during the run settles the batch-norm statistics first; the final one has them from the checkpoint."""
    from napari_dmd import jobs
    from napari_dmd.training import Trainer

    events = []
    settle = Trainer.settle_statistics
    monkeypatch.setattr(Trainer, "settle_statistics",
                        lambda self, it: events.append(("settle", it)) or settle(self, it))
    predict = jobs.predict_images

    def predicting(model, items, patch, iteration, *args):
        events.append(("predict", iteration))
        yield from predict(model, items, patch, iteration, *args)

    monkeypatch.setattr(jobs, "predict_images", predicting)
    msgs = list(train_and_predict(job(tmp_path, iterations=3), Control()))
    assert isinstance(msgs[-1], Finished)
    # iterations 1 and 2: settled for the refresh; 3: settled for the final checkpoint, then predicted
    assert events == [("settle", 1), ("predict", 1), ("settle", 2), ("predict", 2), ("settle", 3), ("predict", 3)]
