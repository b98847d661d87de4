"""The workspace's results in the dock (a part of ``WorkspaceCases``): the latest prediction run's (``predict
--workspace`` here or on another machine, or the dock's own run) shown for the case in view as that run's result
layers, ready to correct and merge; 'label this next' over the whole cohort; the workspace in one line.
"""
from __future__ import annotations

from ..errors import DMDError
from ..ranking import Suggestion, slice_means
from ..workspace_results import latest_results


class CohortView:
    """The cohort's results and summary (mixed into ``WorkspaceCases``, whose workspace and dock it uses)."""

    def find_results(self) -> None:
        """Take the workspace's latest predictions (``predict --workspace``, here or elsewhere) as the results."""
        try:
            self.results = latest_results(self.ws.layout.state / "predictions") if self.ws is not None else None
        except DMDError as exc:
            self.results = None
            self.say(f"the latest predictions are not shown: {exc}", problem=True)

    def _show_results(self, case: str) -> None:
        """The case's prediction by the latest run, as that run's result layers (ready to correct and merge)."""
        try:
            got = self.results.read(case) if self.results is not None else None
        except DMDError as exc:
            self.say(f"the prediction of {case} is not shown: {exc}", problem=True)
            return
        if got is None or got[0].shape != self.dock.session.images[case].shape:
            return
        labels, unsure = got
        self.dock.session.current.class_names = self.ws.layout.class_names or self.dock.session.current.class_names
        self.dock.session.show_result(case, labels, unsure, slice_means(unsure))
        self.dock.results.queue(case)
        self.dock.results.flush()

    def image_of(self, case: str):
        """The image of ``case`` while it is in view (its layers' data; the training thread predicts it), else
        None."""
        session = self.dock.session
        return session.grouping.case_image(case) if case == self.case and case in session.images else None

    def results_written(self) -> None:
        """A run predicted the workspace: its results are the latest, the case in view's shown."""
        self.find_results()
        if self.case is not None:
            self._show_results(self.case)
        self.refresh()

    def suggestions(self) -> list[Suggestion]:
        """'Label this next' over the whole cohort, from the latest predictions (best first)."""
        return list(self.results.ranking) if self.results is not None else []

    def training_counts(self) -> tuple[int, int]:
        """How many labelled (wholly or partly) and unlabelled cases a Start trains on (test cases never)."""
        train = [c for c in self.cases if not c.test]
        labelled = sum(c.label is not None and c.reviewed != 0 for c in train)
        return labelled, len(train) - labelled

    def summary(self) -> str:
        """What the workspace holds: '40 cases: 3 labelled, 2 partly reviewed, 35 unlabelled (1 test)'."""
        train = [c for c in self.cases if not c.test]
        whole = sum(c.labelled_whole for c in train)
        partly = sum(c.label is not None and bool(c.reviewed) for c in train)
        tests = len(self.cases) - len(train)
        return (f"{len(self.cases)} cases: {whole} labelled, {partly} partly reviewed, "
                f"{len(train) - whole - partly} unlabelled" + (f" ({tests} test)" if tests else ""))
