"""Property-based test: random sequences of saves, undos, redos, tag flips and class edits keep the
store equal to a simple in-memory model, and the database consistent, after every step."""
from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from annotations import imageio
from annotations.errors import AnnotationError, StaleWriteError
from annotations.store import Project

H, W = 6, 7


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.p = Project.create(self.dir + "/p", ["bg", "a", "b"])
        self.classes = ["bg", "a", "b"]
        self.ids = []
        for k in range(2):
            arr = np.full((H, W, 3), k * 40, np.uint8)
            path = f"{self.dir}/img{k}.png"
            open(path, "wb").write(imageio.encode_image_png(arr))
            self.ids.append(self.p.add_image(path).id)
        # model: per image, list of versions (arrays), head index into it (0 = none), latest
        self.versions = {i: {} for i in self.ids}
        self.head = {i: 0 for i in self.ids}
        self.latest = {i: 0 for i in self.ids}
        self.tags = {i: {} for i in self.ids}

    def teardown(self):
        self.p.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(k=st.integers(0, 1), seed=st.integers(0, 2**31 - 1), stale=st.booleans())
    def save(self, k, seed, stale):
        i = self.ids[k]
        rng = np.random.default_rng(seed)
        arr = rng.choice(np.array([255] + list(range(len(self.classes))), np.uint8), size=(H, W))
        expected = self.head[i] - 1 if stale and self.head[i] > 0 else self.head[i]
        try:
            v = self.p.save_scribbles(i, arr, expected_version=expected)
        except StaleWriteError:
            assert expected != self.head[i]
            return
        assert expected == self.head[i]
        assert v == self.latest[i] + 1
        self.versions[i][v] = arr
        self.head[i] = self.latest[i] = v

    @rule(k=st.integers(0, 1))
    def undo(self, k):
        i = self.ids[k]
        try:
            v = self.p.undo_scribbles(i)
        except AnnotationError:
            assert self.head[i] == 0
            return
        self.head[i] = max([x for x in self.versions[i] if x < self.head[i]], default=0)
        assert v == self.head[i]

    @rule(k=st.integers(0, 1))
    def redo(self, k):
        i = self.ids[k]
        try:
            v = self.p.redo_scribbles(i)
        except AnnotationError:
            assert self.head[i] == self.latest[i]
            return
        self.head[i] = min(x for x in self.versions[i] if x > self.head[i])
        assert v == self.head[i]

    @rule(k=st.integers(0, 1), c=st.integers(0, 4), state=st.sampled_from(["present", "absent", "unknown"]))
    def tag(self, k, c, state):
        i = self.ids[k]
        if c >= len(self.classes):
            try:
                self.p.set_tag(i, c, state)
            except AnnotationError:
                return
            raise AssertionError("a tag on a missing class was accepted")
        self.p.set_tag(i, c, state)
        if state == "unknown":
            self.tags[i].pop(c, None)
        else:
            self.tags[i][c] = state

    @precondition(lambda self: len(self.classes) < 6)
    @rule(name=st.sampled_from(["c", "d", "e", "A", "bg"]))
    def add_class(self, name):
        try:
            self.p.add_class(name)
        except AnnotationError:
            assert name.lower() in [c.lower() for c in self.classes]
            return
        self.classes.append(name)

    @rule(c=st.integers(0, 5), name=st.sampled_from(["x", "y", "bg", "A"]))
    def rename(self, c, name):
        try:
            self.p.rename_class(c, name)
        except AnnotationError:
            assert c >= len(self.classes) or name.lower() in [n.lower() for j, n in enumerate(self.classes) if j != c]
            return
        self.classes[c] = name

    @rule(c=st.integers(0, 5), color=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
    def recolor(self, c, color):
        try:
            self.p.recolor_class(c, color)
        except AnnotationError:
            assert c >= len(self.classes)
            return
        assert self.p.class_info(c).color == color

    @precondition(lambda self: len(self.classes) > 2)
    @rule(c=st.integers(0, 5))
    def delete_class(self, c):
        if c >= len(self.classes):
            try:
                self.p.delete_class(c, force=True)
            except AnnotationError:
                return
            raise AssertionError("deleting a missing class was accepted")
        self.p.delete_class(c, force=True)
        lut = np.arange(256, dtype=np.uint8)
        lut[c] = 255
        lut[c + 1 : 255] -= 1
        for i in self.ids:
            head = self.versions[i].get(self.head[i])
            self.versions[i] = {v: lut[a] for v, a in self.versions[i].items()}
            if head is not None and not np.array_equal(lut[head], head):  # the head changed: a new version
                self.latest[i] += 1
                self.head[i] = self.latest[i]
                self.versions[i][self.head[i]] = lut[head]
            self.tags[i] = {k - (k > c): s for k, s in self.tags[i].items() if k != c}
        self.classes.pop(c)

    @invariant()
    def every_version_matches_model(self):
        # Undo reaches every version: none may use an index the class list no longer has.
        for i in self.ids:
            for v, arr in self.versions[i].items():
                assert np.array_equal(self.p.scribbles(i, version=v), arr), (i, v)

    @invariant()
    def matches_model(self):
        assert self.p.class_names == self.classes
        for i in self.ids:
            assert self.p.scribble_version(i) == self.head[i]
            cur = self.p.scribbles(i)
            if self.head[i] == 0:
                assert cur is None
            else:
                assert np.array_equal(cur, self.versions[i][self.head[i]])
            assert self.p.tags(i) == self.tags[i]
            st_ = self.p.status(i)
            scribbled = self.head[i] and (self.versions[i][self.head[i]] != 255).any()
            assert st_ == ("scribbled" if scribbled else "tagged" if self.tags[i] else "untouched")

    @invariant()
    def database_consistent(self):
        assert self.p.integrity_check() == "ok"
        assert self.p._conn().execute("PRAGMA foreign_key_check").fetchall() == []


StoreMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestStoreMachine = StoreMachine.TestCase
