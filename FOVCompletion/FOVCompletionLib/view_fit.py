"""Keep a slice view fitted to its volumes while a new layout settles, until the person zooms.

`vtkMRMLSliceLogic.FitSliceToAll` fits the slice node's current dimensions. Right after a layout switch the
application has not given the new views their final size yet (that takes a few turns of the event loop, and the
window manager may resize again), so a fit made then uses stale dimensions. Instead of guessing when the layout is
done, this observes the slice node: each time its dimensions change (the view was resized) the view is fitted again
and its followers get the same field of view. The slice offset (which sagittal slice is shown) is kept. As soon as
the field of view changes without a resize, the person has zoomed: from then on the view is theirs.
"""

from __future__ import annotations

import vtk

_active: list[FitKeeper] = []


class FitKeeper:
    """Fits `sliceLogic`'s view now and after every resize; `followers` (slice nodes) get its field of view."""

    def __init__(self, sliceLogic, followers=()) -> None:
        self.sliceLogic = sliceLogic
        self.sliceNode = sliceLogic.GetSliceNode()
        self.followers = list(followers)
        self.fits = 0
        self._tag = None
        self._fitting = False
        self._dimensions = None
        self._fieldOfView = None

    @property
    def active(self) -> bool:
        return self._tag is not None

    def start(self) -> FitKeeper:
        """Fit now and keep fitting on resizes (a keeper already watching this view stops: one per view)."""
        for other in list(_active):
            if other.sliceNode is self.sliceNode:
                other.stop()
        self.fit()
        self._tag = self.sliceNode.AddObserver(vtk.vtkCommand.ModifiedEvent, self._onModified)
        _active.append(self)
        return self

    def stop(self) -> None:
        if self._tag is not None:
            self.sliceNode.RemoveObserver(self._tag)
            self._tag = None
        if self in _active:
            _active.remove(self)

    def fit(self) -> None:
        self._fitting = True
        try:
            offset = self.sliceNode.GetSliceOffset()
            self.sliceLogic.FitSliceToAll()
            self.sliceNode.SetSliceOffset(offset)  # the fit also centres the slab: keep the slice being shown
            fieldOfView = self.sliceNode.GetFieldOfView()
            for follower in self.followers:
                follower.SetFieldOfView(*fieldOfView)
        finally:
            self._fitting = False
        self.fits += 1
        self._dimensions = tuple(self.sliceNode.GetDimensions())
        self._fieldOfView = tuple(self.sliceNode.GetFieldOfView())

    def _onModified(self, caller=None, event=None) -> None:
        if self._fitting:
            return
        if tuple(self.sliceNode.GetDimensions()) != self._dimensions:
            self.fit()  # resized (the layout settling, or the window): fit the new size
        elif any(
            abs(a - b) > 1e-6 * max(1.0, abs(b))
            for a, b in zip(self.sliceNode.GetFieldOfView(), self._fieldOfView)
        ):
            self.stop()  # zoomed by the person: leave the view alone from now on


def keepFitted(appLogic, viewName: str, followers=()) -> FitKeeper | None:
    """Start a FitKeeper on a view of Slicer's application logic; None without one (a bare scene)."""
    if appLogic is None:
        return None
    sliceLogic = appLogic.GetSliceLogicByLayoutName(viewName)
    if sliceLogic is None or sliceLogic.GetSliceNode() is None:
        return None
    return FitKeeper(sliceLogic, followers).start()


def stopKeepingFitted() -> None:
    """Stop every keeper (the scene closes: its views start over)."""
    for keeper in list(_active):
        keeper.stop()
