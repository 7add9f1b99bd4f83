"""Batch sources: arrays kept on the device and indexed there, in an order seeded by (seed, epoch).

A batch source exposes ``steps_per_epoch`` and ``epoch(epoch, seed=..., start=0, rank=0,
world_size=1)``, an iterator over the batches of one epoch from step ``start`` on. The
order depends only on ``(seed, epoch)``, so a resumed run sees the very batches an
uninterrupted run would. With several processes each rank gets its slice of every
global batch (``batch_size`` is global).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.logging import logger
from .._core.validation import format_error

__all__ = ["BatchSource", "ArrayBatches", "MultiSubjectBatches", "IndexedRows", "ChoiceRows"]

def _generator(seed: int, *keys: int) -> Any:
    """A CPU torch generator seeded by a hash of ``(seed, *keys)``."""
    import torch

    entropy = [int(v) & 0xFFFFFFFF for v in (seed, *keys)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)
    return g


class BatchSource(Protocol):
    """What :meth:`Trainer.fit` needs from its data."""

    steps_per_epoch: int

    def epoch(self, epoch: int, *, seed: int = 0, start: int = 0, rank: int = 0,
              world_size: int = 1) -> Iterator[dict[str, Any]]: ...

    def to(self, device: Any) -> BatchSource: ...


class IndexedRows:
    """Per-sample rows of ``table`` addressed by ``index``, without copying repeated rows.

    NSD shows each image three times: per-trial targets built by fancy indexing store every
    target three times (about 10 GB per subject for CLIP ViT-L/14 tokens in float16). Pass
    ``IndexedRows(unique_targets, trial_to_row)`` in a batch source's arrays instead; each
    batch gathers its rows from the table.

    Parameters
    ----------
    table : ndarray or Tensor of shape (n_rows, ...)
        The distinct rows (e.g. one target per stimulus).
    index : ndarray of int, shape (n_samples,)
        Row of ``table`` for each sample (0-based).
    """

    def __init__(self, table: Any, index: Any) -> None:
        import torch

        self.table = table if isinstance(table, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(table))
        if self.table.dtype == torch.float64:
            self.table = self.table.float()
        idx = index if isinstance(index, torch.Tensor) else torch.from_numpy(np.asarray(index, dtype=np.int64))
        self.index = idx.long()
        if self.index.ndim != 1 or (len(self.index) and (int(self.index.min()) < 0
                                                         or int(self.index.max()) >= len(self.table))):
            raise ValidationError(format_error("index", f"1-d row numbers in [0, {len(self.table) - 1}]",
                                               f"{tuple(self.index.shape)} values", "Map each sample to a table row"))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ndim(self) -> int:
        return int(self.table.ndim)

    @property
    def device(self) -> Any:
        return self.table.device

    def numel(self) -> int:
        return int(self.table.numel() + self.index.numel())

    def element_size(self) -> int:
        return int(self.table.element_size())

    def to(self, device: Any, **kwargs: Any) -> IndexedRows:
        return IndexedRows(self.table.to(device, **kwargs), self.index.to(device, **kwargs))

    def pin_memory(self) -> IndexedRows:
        return IndexedRows(self.table.pin_memory(), self.index.pin_memory())

    def index_select(self, dim: int, i: Any) -> Any:
        rows = self.index.index_select(0, i.to(self.index.device))
        return self.table.index_select(0, rows.to(self.table.device))


class ChoiceRows:
    """Per-sample groups of rows of ``table``, one row of the group drawn for each batch.

    The text target of an NSD image is one of its COCO captions: MindBridge feeds one caption per
    step, not their mean. Give each sample the block of rows holding its image's captions; every
    batch takes one row of each block: ``mode="cycle"`` takes row ``step % cycle`` of every block
    (modulo the block's size; the reference's ``prompts[train_i % 3]``), ``mode="random"`` draws one
    uniformly with a generator seeded by (seed, epoch, step), so a resumed run draws the same rows; the
    draw is made for every sample of the table and read at the batch's samples, so a sample's row is the
    same whichever process of a distributed run holds it.

    Parameters
    ----------
    table : ndarray or Tensor of shape (n_rows, ...)
        All groups' rows (e.g. one row per caption).
    starts, counts : ndarray of int, shape (n_samples,)
        First row and number of rows of each sample's group (counts >= 1).
    mode : {"cycle", "random"}
    cycle : int
        ``mode="cycle"``: the period (the reference: 3).
    """

    def __init__(self, table: Any, starts: Any, counts: Any, mode: str = "cycle", cycle: int = 3) -> None:
        import torch

        from .._core.validation import check_option

        check_option(mode, "mode", ("cycle", "random"))
        self.table = table if isinstance(table, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(table))
        if self.table.dtype == torch.float64:
            self.table = self.table.float()
        self.starts = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        self.counts = torch.as_tensor(np.asarray(counts, dtype=np.int64))
        if (self.starts.shape != self.counts.shape or self.starts.ndim != 1
                or (len(self.counts) and (int(self.counts.min()) < 1 or int(self.starts.min()) < 0
                                          or int((self.starts + self.counts).max()) > len(self.table)))):
            raise ValidationError(format_error("starts/counts", f"1-d blocks of >= 1 rows inside [0, {len(self.table)})",
                                               f"shapes {tuple(self.starts.shape)} / {tuple(self.counts.shape)}"))
        if not isinstance(cycle, int) or cycle < 1:
            raise ValidationError(format_error("cycle", "a positive integer", cycle))
        self.mode, self.cycle = mode, cycle

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def ndim(self) -> int:
        return int(self.table.ndim)

    @property
    def device(self) -> Any:
        return self.table.device

    def numel(self) -> int:
        return int(self.table.numel() + 2 * self.starts.numel())

    def element_size(self) -> int:
        return int(self.table.element_size())

    def _like(self, table: Any, starts: Any, counts: Any) -> ChoiceRows:
        out = ChoiceRows.__new__(ChoiceRows)
        out.table, out.starts, out.counts, out.mode, out.cycle = table, starts, counts, self.mode, self.cycle
        return out

    def to(self, device: Any, **kwargs: Any) -> ChoiceRows:
        return self._like(self.table.to(device, **kwargs), self.starts.to(device, **kwargs),
                          self.counts.to(device, **kwargs))

    def pin_memory(self) -> ChoiceRows:
        return self._like(self.table.pin_memory(), self.starts.pin_memory(), self.counts.pin_memory())

    def rows(self, i: Any, *, step: int = 0, generator: Any = None) -> Any:
        """The table row chosen for samples ``i`` at global ``step`` (a LongTensor)."""
        import torch

        i = i.to(self.starts.device)
        start, count = self.starts.index_select(0, i), self.counts.index_select(0, i)
        if self.mode == "cycle":
            offset = torch.remainder(torch.full_like(count, int(step) % self.cycle), count)
        else:  # one draw per sample of the table, read at i: a sample's row does not depend on which batch
            # slice (process) holds it, so 1 and N processes on the same global batch choose the same rows
            gen = generator if generator is not None else _generator(0, int(step))
            u = torch.rand(len(self.starts), generator=gen).to(count.device).index_select(0, i)
            offset = torch.minimum((u * count).long(), count - 1)
        return start + offset

    def index_select(self, dim: int, i: Any, *, step: int = 0, generator: Any = None) -> Any:
        rows = self.rows(i, step=step, generator=generator)
        return self.table.index_select(0, rows.to(self.table.device))


def _as_tensors(arrays: Mapping[str, Any], param: str) -> dict[str, Any]:
    import torch

    if not isinstance(arrays, Mapping) or not arrays:
        raise ValidationError(format_error(param, "a non-empty dict of arrays", arrays))
    out: dict[str, Any] = {}
    n = None
    for key, value in arrays.items():
        if isinstance(value, (IndexedRows, ChoiceRows)):
            t = value
        else:
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(t, (IndexedRows, ChoiceRows)) and t.dtype == torch.float64:
            t = t.float()
        if t.ndim == 0:
            raise ShapeMismatchError(format_error(f"{param}[{key!r}]", "an array with a leading sample axis", t))
        if n is None:
            n = len(t)
        elif len(t) != n:
            sizes = {k: len(v) for k, v in arrays.items()}
            raise ShapeMismatchError(format_error(param, "arrays with the same number of samples", str(sizes),
                                                  "Pass one row per trial in every array"))
        out[str(key)] = t
    return out


def _fits_on(tensors: Mapping[str, Any], device: Any) -> bool:
    import torch

    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    free, _ = torch.cuda.mem_get_info(device)
    return bool(need < 0.5 * free)


def _rank_slice(idx: Any, rank: int, world_size: int) -> Any:
    if world_size == 1:
        return idx
    n = len(idx)
    lo, hi = (n * rank) // world_size, (n * (rank + 1)) // world_size
    return idx[lo:hi]


def _gather(tensors: Mapping[str, Any], idx: Any, device: Any, *, step: int = 0,
            choice_keys: tuple[int, ...] = ()) -> dict[str, Any]:
    """Rows ``idx`` of every array; :class:`ChoiceRows` choose theirs for global ``step``
    (random draws seeded by ``choice_keys``: the batch source's (seed, epoch, step, ...), and a hash of the
    key's name, so that two ChoiceRows of one batch, e.g. captions and augmented views, draw independently)."""
    import zlib

    out = {}
    for key, t in tensors.items():
        i = idx.to(t.device) if idx.device != t.device else idx
        if isinstance(t, ChoiceRows):
            gen = _generator(*choice_keys, zlib.crc32(str(key).encode())) if choice_keys else None
            part = t.index_select(0, i, step=step, generator=gen)
        else:
            part = t.index_select(0, i) if t.ndim else t
        if device is not None and part.device != device:
            part = part.to(device, non_blocking=True)
        out[key] = part
    return out


def _distinct_group_order(perm: np.ndarray, groups: np.ndarray, batch_size: int) -> np.ndarray:
    """Reorder ``perm`` so that each consecutive chunk of ``batch_size`` holds distinct groups where possible.

    Walks the permutation; a sample whose group is already in the current batch waits in a queue that
    is served first when the next batch starts. Deterministic given ``perm``; every sample appears once.
    """
    from collections import deque

    out: list[int] = []
    waiting: deque[int] = deque()
    pending = iter(perm.tolist())
    exhausted = False
    while len(out) < len(perm):
        used: set[int] = set()
        batch: list[int] = []
        for _ in range(len(waiting)):  # deferred samples first, once each per batch
            i = waiting.popleft()
            if groups[i] in used or len(batch) == batch_size:
                waiting.append(i)
            else:
                used.add(int(groups[i]))
                batch.append(i)
        while len(batch) < batch_size and not exhausted:
            i = next(pending, None)
            if i is None:
                exhausted = True
            elif groups[i] in used:
                waiting.append(i)
            else:
                used.add(int(groups[i]))
                batch.append(i)
        if len(batch) < batch_size and exhausted:  # the data allow no more distinct batches
            batch += [waiting.popleft() for _ in range(min(batch_size - len(batch), len(waiting)))]
        out += batch
    return np.asarray(out, dtype=np.int64)


class ArrayBatches:
    """Batches from a dict of equally long arrays (one subject, or homogeneous data).

    Parameters
    ----------
    arrays : dict of str to ndarray or Tensor
        Each of shape (n_samples, ...); float64 is stored as float32.
    batch_size : int
        Global batch size.
    shuffle : bool
        Shuffle every epoch (order seeded by ``(seed, epoch)``).
    drop_last : bool or None
        Drop the last incomplete batch; defaults to ``shuffle`` (training drops it,
        evaluation keeps every sample).
    extra : dict or None
        Constant entries added to every batch (e.g. ``{"subject": "nsd/subj01"}``).
    groups : array-like of shape (n_samples,) or None
        A group per sample (e.g. the sentence a row reads): with ``shuffle``, no batch holds two
        samples of one group where the data allow it (GLIM's batches hold no sentence twice, so
        the contrastive negatives are all other sentences). Samples are deferred to a later batch,
        never dropped before the epoch's end.
    """

    def __init__(self, arrays: Mapping[str, Any], batch_size: int, shuffle: bool = True,
                 drop_last: bool | None = None, extra: Mapping[str, Any] | None = None,
                 groups: Any = None) -> None:
        self.tensors = _as_tensors(arrays, "arrays")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(format_error("batch_size", "a positive integer", batch_size))
        self.n_samples = len(next(iter(self.tensors.values())))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = shuffle if drop_last is None else drop_last
        self.extra = dict(extra or {})
        self.device: Any = None
        self.groups = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
        if self.groups is not None and len(self.groups) != self.n_samples:
            raise ValidationError(format_error("groups", f"one group per sample ({self.n_samples})",
                                               f"{len(self.groups)} entries"))
        if self.drop_last and self.n_samples < batch_size:
            raise ValidationError(format_error("batch_size", f"at most the {self.n_samples} samples", batch_size,
                                               "Lower the batch size or pass drop_last=False"))

    @property
    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        if self.drop_last:
            return self.n_samples // self.batch_size
        return -(-self.n_samples // self.batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def to(self, device: Any, *, keep_on_device: bool = True) -> ArrayBatches:
        """Move the arrays to ``device`` once (if they fit), else keep them on the host and move each batch."""
        import torch

        device = torch.device(device)
        self.device = device
        if keep_on_device and _fits_on(self.tensors, device):
            self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        else:
            if device.type == "cuda":
                logger.info("training arrays do not fit on %s; batches are copied from pinned host memory", device)
                self.tensors = {k: v.pin_memory() for k, v in self.tensors.items()}
        return self

    def order(self, epoch: int, seed: int = 0) -> Any:
        """The sample order of ``epoch`` (a CPU LongTensor)."""
        import torch

        if self.shuffle:
            perm = torch.randperm(self.n_samples, generator=_generator(seed, epoch))
            if self.groups is not None:
                perm = torch.as_tensor(_distinct_group_order(perm.numpy(), self.groups, self.batch_size))
            return perm
        return torch.arange(self.n_samples)

    def epoch(self, epoch: int, *, seed: int = 0, start: int = 0, rank: int = 0,
              world_size: int = 1) -> Iterator[dict[str, Any]]:
        """Iterate the batches of ``epoch`` from step ``start``; each rank gets its slice."""
        order = self.order(epoch, seed)
        dev = next(iter(self.tensors.values())).device
        order = order.to(dev)
        spe = self.steps_per_epoch
        for step in range(start, spe):
            idx = _rank_slice(order[step * self.batch_size:(step + 1) * self.batch_size], rank, world_size)
            batch = _gather(self.tensors, idx, self.device, step=epoch * spe + step,
                            choice_keys=(seed, epoch, step, 104729))
            batch.update(self.extra)
            yield batch


class MultiSubjectBatches:
    """Batches from several subjects with different input sizes.

    Each step draws ``subjects_per_step`` distinct subjects (with probability
    proportional to their number of samples) and ``batch_size`` samples from each
    subject's own shuffled order (reshuffled when used up).

    Parameters
    ----------
    data : dict of str to dict of str to ndarray
        ``{subject_id: {"x": (n_s, n_voxels_s), "image_tokens": (n_s, ...), ...}}``.
    batch_size : int
        Samples per subject per step (global).
    subjects_per_step : int
        1 yields flat batches ``{"subject": id, **arrays}``; 2 or more yields
        ``{"parts": [batch_subject_a, batch_subject_b, ...]}`` (MindBridge's cycle loss needs 2).
    shuffle : bool
        ``False`` walks each subject in order, once (evaluation); subjects follow one another.
    steps_per_epoch : int or None
        Defaults to the number of full batches over all subjects divided by ``subjects_per_step``
        (with an ``anchor``: the anchor subject's number of batches).
    anchor : str or None
        A subject present in every step (first part), the others drawn from the rest: MindBridge's
        reset-tuning mixes a source-subject batch into each batch of the new subject.
    """

    def __init__(self, data: Mapping[str, Mapping[str, Any]], batch_size: int, subjects_per_step: int = 1,
                 shuffle: bool = True, steps_per_epoch: int | None = None, anchor: str | None = None) -> None:
        if not isinstance(data, Mapping) or not data:
            raise ValidationError(format_error("data", "a non-empty dict {subject_id: {name: array}}", data))
        self.subjects = [str(s) for s in data]
        self.sources = {str(s): ArrayBatches(arrays, batch_size, shuffle=shuffle,
                                             drop_last=shuffle, extra={"subject": str(s)})
                        for s, arrays in data.items()}
        if not 1 <= subjects_per_step <= len(self.subjects):
            raise ValidationError(format_error("subjects_per_step", f"an integer in [1, {len(self.subjects)}]",
                                               subjects_per_step, "Add subjects or lower subjects_per_step"))
        self.batch_size = batch_size
        self.subjects_per_step = subjects_per_step
        self.shuffle = shuffle
        if anchor is not None and str(anchor) not in self.sources:
            raise ValidationError(format_error("anchor", "one of " + ", ".join(map(repr, self.subjects)), repr(anchor)))
        if anchor is not None and not shuffle:
            raise ValidationError(format_error("anchor", "None when shuffle=False", repr(anchor)))
        self.anchor = None if anchor is None else str(anchor)
        per_subject = [len(src) for src in self.sources.values()]
        default = max(1, sum(per_subject) // subjects_per_step) if shuffle else sum(per_subject)
        if self.anchor is not None:
            default = len(self.sources[self.anchor])
        self._steps = int(steps_per_epoch or default)

    @property
    def steps_per_epoch(self) -> int:
        """Number of steps in one epoch."""
        return self._steps

    def __len__(self) -> int:
        return self._steps

    def to(self, device: Any, *, keep_on_device: bool = True) -> MultiSubjectBatches:
        """Move every subject's arrays to ``device`` (see :meth:`ArrayBatches.to`)."""
        for src in self.sources.values():
            src.to(device, keep_on_device=keep_on_device)
        return self

    def _plan(self, epoch: int, seed: int) -> Iterator[list[tuple[str, Any]]]:
        """Yield, per step, the (subject, global index tensor) pairs, without touching the data."""
        import torch

        if not self.shuffle:
            for s in self.subjects:
                src = self.sources[s]
                order = src.order(epoch, seed)
                for step in range(src.steps_per_epoch):
                    yield [(s, order[step * src.batch_size:(step + 1) * src.batch_size])]
            return
        g = _generator(seed, epoch, 7)
        weights = torch.tensor([float(self.sources[s].n_samples) for s in self.subjects])
        n_draw = self.subjects_per_step
        if self.anchor is not None:
            weights[self.subjects.index(self.anchor)] = 0.0
            n_draw -= 1
        pos = dict.fromkeys(self.subjects, 0)
        cycle = dict.fromkeys(self.subjects, 0)
        orders = {s: self.sources[s].order(epoch * 1000, seed + 17 * (i + 1)) for i, s in enumerate(self.subjects)}
        for _ in range(self._steps):
            chosen = torch.multinomial(weights, n_draw, replacement=False, generator=g).tolist() if n_draw else []
            if self.anchor is not None:
                chosen = [self.subjects.index(self.anchor), *chosen]
            parts = []
            for j in chosen:
                s = self.subjects[j]
                src = self.sources[s]
                if pos[s] + self.batch_size > src.n_samples:
                    cycle[s] += 1
                    pos[s] = 0
                    orders[s] = src.order(epoch * 1000 + cycle[s], seed + 17 * (j + 1))
                parts.append((s, orders[s][pos[s]:pos[s] + self.batch_size]))
                pos[s] += self.batch_size
            yield parts

    def epoch(self, epoch: int, *, seed: int = 0, start: int = 0, rank: int = 0,
              world_size: int = 1) -> Iterator[dict[str, Any]]:
        """Iterate the batches of ``epoch`` from step ``start``; each rank gets its slice of each sub-batch."""
        for step, parts in enumerate(self._plan(epoch, seed)):
            if step < start:
                continue
            built = []
            for s, idx in parts:
                src = self.sources[s]
                dev = next(iter(src.tensors.values())).device
                batch = _gather(src.tensors, _rank_slice(idx.to(dev), rank, world_size), src.device,
                                step=epoch * self._steps + step,
                                choice_keys=(seed, epoch, step, self.subjects.index(s), 104729))
                batch["subject"] = s
                built.append(batch)
            yield built[0] if self.subjects_per_step == 1 else {"parts": built}
