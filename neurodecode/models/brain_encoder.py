"""The transformer brain encoder (Adeli, Minni & Kriegeskorte, NeurIPS 2025; arXiv 2505.17329): image -> voxels.

What the reference (``Hosseinadeli/transformer_brain_encoder``, defaults of ``main.py``) runs, and this module
by default:

1. a frozen DINOv2 ViT-B/14 gives patch features (the reference's ``dinov2_q``: the *query* projections of
   the last block, CLS dropped; here the latent space ``dinov2-base-q-tokens``, computed once and cached);
2. a sine 2-D positional encoding over the patch grid (DETR's ``PositionEmbeddingSine``, ``hidden_dim / 2``
   features per axis, normalised coordinates times 2 pi, temperature 10,000);
3. a one-layer, pre-norm transformer *decoder* (hidden 768, 16 heads, FFN 1,024, ReLU, dropout 0.1) whose
   queries are learned: one per ROI group (``readout_res='rois_all'``: one per ROI label per hemisphere,
   plus one "unlabelled" group for the voxels in no ROI). The queries start at zero and carry their
   learned embedding as the query position (DETR); the reference's forward runs only the cross-attention
   and the FFN (its self-attention block among the queries exists but is commented out of ``forward_pre``:
   ``self_attention=False`` here, ``True`` runs DETR's full layer); a final LayerNorm;
4. a linear readout ``Linear(768 -> n_voxels)`` applied to every query; each voxel keeps the prediction of
   its own ROI's query (a one-hot ROI membership; a voxel in several ROIs sums them, as the reference);
5. MSE; AdamW lr 5e-4, weight decay 1e-4, StepLR every 4 epochs (gamma 0.1), 15 epochs, batch 16,
   gradient clipping 0.1 (the recipe ``pipelines/brain_encoder_nsd.toml`` and
   :class:`neurodecode.estimators._encoder.BrainEncoder` train it with the shared trainer).

Differences, each named: NSD native-space voxels (nsdgeneral, per-ROI labels from NSD's atlases) instead of
Algonauts' fsaverage vertices, one readout over all voxels (the reference keeps one per hemisphere: the same
parameters when each voxel belongs to one hemisphere; pass ``hemisphere=`` to :func:`roi_groups` for
per-hemisphere queries), one MSE over all voxels (the reference sums the left and right hemispheres' MSEs),
224 px inputs (the hub's DINOv2 preprocessing; the reference pads 425 px images to 434 px, a 31 x 31 grid) and
no horizontal-flip augmentation (features are cached).

The ridge encoding baseline (:class:`RidgeBrainEncoder`) regresses the voxels on the same features
(flattened tokens, or their mean) with :func:`neurodecode.models.ridge.ridge_fit` (alpha per voxel by
closed-form leave-one-out).

Example
-------
>>> import numpy as np
>>> from neurodecode.models.brain_encoder import TransformerBrainEncoder, roi_groups
>>> membership, names = roi_groups(np.array([1, 1, 2, 0, 2, 1, 0]))
>>> model = TransformerBrainEncoder.tiny(membership=membership, roi_names=names)
>>> model.predict(np.zeros((2, 9, 28), dtype=np.float32)).shape
(2, 7)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._core.errors import NotFittedError, ShapeMismatchError, ValidationError
from .._core.validation import check_array, check_option, dataclass_from_dict, format_error
from ..io.checkpoints import PretrainedMixin

__all__ = ["BrainEncoderConfig", "TransformerBrainEncoder", "RidgeBrainEncoder", "RidgeEncoderConfig", "roi_groups",
           "sine_position_encoding", "load_brain_encoder", "UNLABELLED"]

#: Name of the group of voxels in no ROI.
UNLABELLED = "unlabelled"


# ------------------------------------------------------------------------------------------ ROI groups
def roi_groups(labels: Any = None, *, membership: Any = None, names: Any = None,
               hemisphere: Any = None) -> tuple[np.ndarray, list[str]]:
    """One query group per ROI (per hemisphere when given), plus the unlabelled voxels.

    Parameters
    ----------
    labels : array of shape (n_voxels,) or None
        One ROI label per voxel: integers (``<= 0`` = in no ROI, as NSD's atlas volumes) or strings
        (``""`` = in no ROI).
    membership : array of shape (n_rois, n_voxels) or None
        Instead of ``labels``: boolean membership, ROIs may overlap (the reference's ``rois_all`` stacks
        several ROI families); voxels in none form the unlabelled group.
    names : list of str or None
        Names of the rows of ``membership``.
    hemisphere : array of shape (n_voxels,) or None
        ``"lh"``/``"rh"`` (or 0/1) per voxel: groups become (hemisphere, ROI) pairs, left first.

    Returns
    -------
    membership : ndarray of shape (n_groups, n_voxels), bool
        Groups in order: the ROIs (sorted labels), then the unlabelled group (only when some voxel is in
        no ROI); per hemisphere, left first.
    names : list of str
        ``"<label>"`` or ``"<hemi>/<label>"``; the unlabelled group is ``"unlabelled"``.
    """
    if (labels is None) == (membership is None):
        raise ValidationError(format_error("labels", "exactly one of labels= or membership=",
                                           "both" if labels is not None else "neither",
                                           "Pass one ROI label per voxel, or a (n_rois, n_voxels) membership"))
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1:
            raise ShapeMismatchError(format_error("labels", "an array of shape (n_voxels,)", lab))
        empty = np.asarray((lab == "") if lab.dtype.kind in "US" else (lab.astype(np.int64) <= 0), dtype=bool)
        values = sorted(set(lab[~empty].tolist()))
        mem = np.stack([lab == v for v in values]) if values else np.zeros((0, len(lab)), dtype=bool)
        row_names = [str(v) for v in values]
    else:
        mem = np.asarray(membership).astype(bool)
        if mem.ndim != 2:
            raise ShapeMismatchError(format_error("membership", "an array of shape (n_rois, n_voxels)", mem))
        row_names = [str(n) for n in names] if names is not None else [f"roi{i}" for i in range(len(mem))]
        if len(row_names) != len(mem):
            raise ShapeMismatchError(format_error("names", f"{len(mem)} names (one per membership row)",
                                                  len(row_names)))
    none = np.asarray(~mem.any(0), dtype=bool)
    if none.any():
        mem = np.concatenate([mem, none[None]])
        row_names = [*row_names, UNLABELLED]
    if hemisphere is None:
        return mem, row_names
    hemi = np.asarray(hemisphere).astype(str)
    if hemi.shape != (mem.shape[1],):
        raise ShapeMismatchError(format_error("hemisphere", f"an array of shape ({mem.shape[1]},)", hemi))
    sides = [h for h in ("lh", "0", "rh", "1") if (hemi == h).any()]
    rows, out_names = [], []
    for side in sides:
        for row, name in zip(mem, row_names):
            sel = row & (hemi == side)
            if sel.any():
                rows.append(sel)
                out_names.append(f"{side}/{name}")
    return np.stack(rows), out_names


# ------------------------------------------------------------------------------------------ positions
def sine_position_encoding(height: int, width: int, dim: int, *, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine 2-D encoding of a ``height`` x ``width`` grid (row-major): ``(height * width, dim)``.

    The first ``dim / 2`` features encode the row (``y``), the rest the column (``x``); each axis's
    positions ``1..n`` are divided by ``n`` and multiplied by 2 pi; feature ``i`` is ``sin`` (even ``i``) or
    ``cos`` (odd ``i``) of ``pos / temperature ** (2 * (i // 2) / (dim / 2))``.
    """
    if dim % 4:
        raise ValidationError(format_error("hidden_dim", "a multiple of 4 (sine/cosine per axis)", dim))
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width) / (width + eps) * scale
    dim_t = temperature ** (2 * torch.div(torch.arange(half), 2, rounding_mode="floor") / half)

    def enc(p: torch.Tensor) -> torch.Tensor:
        v = p[..., None] / dim_t
        return torch.stack((v[..., 0::2].sin(), v[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((enc(y), enc(x)), dim=-1).reshape(height * width, dim)


# ------------------------------------------------------------------------------------------ config
@dataclass
class BrainEncoderConfig:
    """Configuration of :class:`TransformerBrainEncoder` (defaults: the reference's).

    Parameters
    ----------
    n_voxels : int
        Voxels predicted (nsdgeneral: 15,724 for NSD subject 1).
    n_groups : int
        ROI query groups (from :func:`roi_groups`; the unlabelled group included).
    roi_names : list of str
        Name of each group.
    subject : str or None
        Namespaced subject id (``"nsd/subj01"``).
    space : str
        Latent space of the input tokens (``"dinov2-base-q-tokens"``: 256 x 768).
    feature_dim : int
        Width of the input tokens (a linear projection to ``hidden_dim`` when they differ).
    grid : tuple of int
        Token grid (rows, columns): 16 x 16 at 224 px.
    hidden_dim, n_heads, ffn_dim, dec_layers, dropout : int, int, int, int, float
        The decoder (768, 16, 1024, 1, 0.1).
    pre_norm : bool
        LayerNorm before each sub-block (the reference's ``pre_norm=1``); ``False``: its post-norm layer.
    self_attention : bool
        Run a self-attention block among the queries before the cross-attention (DETR's layer). The
        reference's forward skips it (``False``).
    activation : {"relu", "gelu"}
        FFN non-linearity (ReLU).
    """

    n_voxels: int = 15724
    n_groups: int = 2
    roi_names: list[str] = field(default_factory=lambda: ["nsdgeneral", UNLABELLED])
    subject: str | None = "nsd/subj01"
    space: str = "dinov2-base-q-tokens"
    feature_dim: int = 768
    grid: tuple[int, int] = (16, 16)
    hidden_dim: int = 768
    n_heads: int = 16
    ffn_dim: int = 1024
    dec_layers: int = 1
    dropout: float = 0.1
    pre_norm: bool = True
    self_attention: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        self.roi_names = [str(n) for n in self.roi_names]
        for name in ("n_voxels", "n_groups", "feature_dim", "hidden_dim", "n_heads", "ffn_dim", "dec_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError(format_error(name, "a positive integer", v))
        if len(self.roi_names) != self.n_groups:
            raise ValidationError(format_error("roi_names", f"{self.n_groups} names (one per group)",
                                               len(self.roi_names)))
        if self.hidden_dim % self.n_heads:
            raise ValidationError(format_error("n_heads", f"a divisor of hidden_dim={self.hidden_dim}", self.n_heads))
        check_option(self.activation, "activation", ("relu", "gelu"))
        if not 0 <= self.dropout < 1:
            raise ValidationError(format_error("dropout", "a probability in [0, 1)", self.dropout))

    @classmethod
    def tiny(cls, **overrides: Any) -> BrainEncoderConfig:
        """Toy size on ``dinov2-base-q-tokens-tiny`` (9 x 28 tokens): hidden 20, 4 heads, FFN 36."""
        fields: dict[str, Any] = {"space": "dinov2-base-q-tokens-tiny", "feature_dim": 28, "grid": (3, 3),
                                  "hidden_dim": 20, "n_heads": 4, "ffn_dim": 36, "n_voxels": 7, "n_groups": 3,
                                  "roi_names": ["1", "2", UNLABELLED]}
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BrainEncoderConfig:
        """Build from a JSON-style dict (lists become tuples); unknown keys are refused."""
        return dataclass_from_dict(cls, d, "encoder")


# ------------------------------------------------------------------------------------------ the model
class _DecoderLayer(nn.Module):
    """One DETR decoder layer as the reference runs it (cross-attention + FFN; self-attention optional)."""

    def __init__(self, c: BrainEncoderConfig) -> None:
        super().__init__()
        d = c.hidden_dim
        self.self_attn = nn.MultiheadAttention(d, c.n_heads, dropout=c.dropout, batch_first=True) \
            if c.self_attention else None
        self.cross_attn = nn.MultiheadAttention(d, c.n_heads, dropout=c.dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, c.ffn_dim), nn.Linear(c.ffn_dim, d)
        self.norm1, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d) if c.self_attention or not c.pre_norm else None
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(c.dropout) for _ in range(4))
        self.act = nn.functional.relu if c.activation == "relu" else nn.functional.gelu
        self.pre_norm = c.pre_norm

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.act(self.linear1(x))))

    def _cross(self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.cross_attn(x + query_pos, memory + pos, memory, need_weights=False)[0]

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
                ) -> torch.Tensor:
        if self.pre_norm:
            t = self.norm1(tgt)
            if self.self_attn is not None:
                q = t + query_pos
                tgt = tgt + self.dropout1(self.self_attn(q, q, t, need_weights=False)[0])
                assert self.norm2 is not None
                t = self.norm2(tgt)
            tgt = tgt + self.dropout2(self._cross(t, query_pos, memory, pos))
            return tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        # post-norm, as the reference's forward_post
        if self.self_attn is not None:
            q = tgt + query_pos
            tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        else:
            tgt = self.norm1(tgt)
        assert self.norm2 is not None
        tgt = self.norm2(tgt + self.dropout2(self._cross(tgt, query_pos, memory, pos)))
        return self.norm3(tgt + self.dropout3(self._ffn(tgt)))


class TransformerBrainEncoder(PretrainedMixin, nn.Module):
    """Image tokens -> voxel responses through ROI queries (see the module docstring).

    Parameters
    ----------
    config : BrainEncoderConfig or None
        Sizes and options (``None``: the reference's, 2 groups).
    membership : array of shape (n_groups, n_voxels) or None
        ROI membership of every voxel (:func:`roi_groups`); ``None``: every voxel in group 0 (set it
        before training, or load it with the weights).

    Notes
    -----
    Parameters: ``query_embed`` (n_groups, hidden), ``layers`` (the decoder), ``norm`` (its final
    LayerNorm), ``readout`` (Linear hidden -> n_voxels); buffers ``membership`` (n_groups, n_voxels),
    ``pos`` (grid cells, hidden), ``target_mean`` / ``target_std`` (n_voxels,; the voxel standardisation
    learned by :meth:`set_target_stats`, undone in :meth:`predict`) and ``fitted``.
    """

    config_class = BrainEncoderConfig
    membership: torch.Tensor
    pos: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, config: BrainEncoderConfig | None = None, membership: Any = None) -> None:
        super().__init__()
        c = self.config = config if config is not None else BrainEncoderConfig()
        self.input_proj: nn.Module = nn.Identity() if c.feature_dim == c.hidden_dim else nn.Linear(c.feature_dim,
                                                                                                  c.hidden_dim)
        self.query_embed = nn.Embedding(c.n_groups, c.hidden_dim)
        self.layers = nn.ModuleList(_DecoderLayer(c) for _ in range(c.dec_layers))
        self.norm = nn.LayerNorm(c.hidden_dim)
        self.readout = nn.Linear(c.hidden_dim, c.n_voxels)
        for p in self.layers.parameters():  # the reference's Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.register_buffer("pos", sine_position_encoding(*c.grid, c.hidden_dim), persistent=False)
        mem = torch.zeros(c.n_groups, c.n_voxels)
        mem[0] = 1.0
        self.register_buffer("membership", mem)
        self.register_buffer("target_mean", torch.zeros(c.n_voxels))
        self.register_buffer("target_std", torch.ones(c.n_voxels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        if membership is not None:
            self.set_membership(membership)

    @classmethod
    def tiny(cls, membership: Any = None, **overrides: Any) -> TransformerBrainEncoder:
        """The toy-size twin (:meth:`BrainEncoderConfig.tiny`); sizes follow ``membership`` when given."""
        if membership is not None:
            mem = np.asarray(membership)
            overrides = {"n_groups": int(mem.shape[0]), "n_voxels": int(mem.shape[1]),
                         "roi_names": overrides.pop("roi_names", [f"roi{i}" for i in range(mem.shape[0])]),
                         **overrides}
        return cls(BrainEncoderConfig.tiny(**overrides), membership=membership)

    def set_membership(self, membership: Any) -> None:
        """Set the ROI membership ``(n_groups, n_voxels)`` (every voxel in at least one group)."""
        mem = np.asarray(membership).astype(bool)
        want = (self.config.n_groups, self.config.n_voxels)
        if mem.shape != want:
            raise ShapeMismatchError(format_error("membership", f"an array of shape {want} (groups, voxels)",
                                                  mem, "Build it with roi_groups(labels) on the same voxels"))
        if not mem.any(0).all():
            raise ValidationError(format_error("membership", "every voxel in a group", f"{int((~mem.any(0)).sum())} "
                                               "voxels in none", "roi_groups() adds the unlabelled group"))
        with torch.no_grad():
            self.membership.copy_(torch.as_tensor(mem, dtype=self.membership.dtype))

    def set_target_stats(self, Y: Any) -> None:
        """Standardise the training voxels: store their mean and std (ddof 0; a constant voxel gets std 1)."""
        y = check_array(Y, "Y", ndim=2, dtype="float")
        mean, std = y.mean(0), y.std(0)
        with torch.no_grad():
            self.target_mean.copy_(torch.as_tensor(mean))
            self.target_std.copy_(torch.as_tensor(np.where(std > 0, std, 1.0)))

    # ------------------------------------------------------------------ forward
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(n, n_tokens, feature_dim)`` -> standardised voxel predictions ``(n, n_voxels)``."""
        src = self.input_proj(tokens)
        pos = self.pos.to(src.dtype)[None]
        query_pos = self.query_embed.weight[None].expand(src.shape[0], -1, -1)
        out = torch.zeros_like(query_pos)
        for layer in self.layers:
            out = layer(out, src, pos, query_pos)
        out = self.norm(out)
        per_query = torch.einsum("bqd,vd->bqv", out, self.readout.weight) + self.readout.bias
        return (per_query * self.membership.to(per_query.dtype)[None]).sum(1)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """MSE between the predictions and the standardised voxels ``batch["y"]`` for tokens ``batch["x"]``."""
        y = (batch["y"].float() - self.target_mean) / self.target_std
        loss = nn.functional.mse_loss(self(batch["x"].float()), y)
        return {"loss": loss}

    # ------------------------------------------------------------------ numpy API
    def _check_tokens(self, X: Any) -> np.ndarray:
        c = self.config
        arr = check_array(X, "X", ndim=3, dtype="float")
        want = (c.grid[0] * c.grid[1], c.feature_dim)
        if arr.shape[1:] != want:
            raise ShapeMismatchError(format_error(
                "X", f"tokens of shape (n, {want[0]}, {want[1]}) from the space {c.space!r}", arr,
                f"Encode the images with neurodecode.latents.get_space({c.space!r})"))
        return arr

    def predict(self, X: Any, *, batch_size: int = 64) -> np.ndarray:
        """Predicted voxel responses (in the units of the training data).

        Parameters
        ----------
        X : ndarray of shape (n_images, n_tokens, feature_dim)
            Features of the images in ``config.space``.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        Y : ndarray of shape (n_images, n_voxels), float32
        """
        arr = self._check_tokens(X)
        was = self.training
        self.eval()
        ref = self.readout.weight
        out = np.empty((len(arr), self.config.n_voxels), dtype=np.float32)
        try:
            with torch.no_grad():
                for s in range(0, len(arr), int(batch_size)):
                    x = torch.as_tensor(arr[s:s + batch_size], dtype=ref.dtype, device=ref.device)
                    out[s:s + len(x)] = (self(x) * self.target_std + self.target_mean).float().cpu().numpy()
        finally:
            self.train(was)
        return out

    def decoder_parameters(self) -> int:
        """Parameters of the decoder (queries excluded): layers + final LayerNorm (+ input projection)."""
        mods = [self.layers, self.norm, self.input_proj]
        return sum(p.numel() for m in mods for p in m.parameters())


# ------------------------------------------------------------------------------------------ ridge baseline
@dataclass
class RidgeEncoderConfig:
    """Configuration of :class:`RidgeBrainEncoder`.

    Parameters
    ----------
    n_voxels : int
    feature_shape : tuple of int
        Shape of one image's features (``(256, 768)`` tokens, or ``(768,)``).
    pool : {"flatten", "mean"}
        Regress on the flattened tokens (every token a feature) or on their mean.
    alphas : tuple of float
        Ridge grid; one alpha chosen per voxel by closed-form leave-one-out (``cv="loo"``).
    space : str
        Latent space of the features.
    subject : str or None
    """

    n_voxels: int = 15724
    feature_shape: tuple[int, ...] = (256, 768)
    pool: str = "flatten"
    alphas: tuple[float, ...] = (1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)
    space: str = "dinov2-base-q-tokens"
    subject: str | None = "nsd/subj01"

    def __post_init__(self) -> None:
        self.feature_shape = tuple(int(s) for s in np.atleast_1d(self.feature_shape))
        self.alphas = tuple(float(a) for a in np.atleast_1d(self.alphas))
        check_option(self.pool, "pool", ("flatten", "mean"))

    @property
    def n_features(self) -> int:
        if self.pool == "mean" and len(self.feature_shape) > 1:
            return int(self.feature_shape[-1])
        return int(np.prod(self.feature_shape))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RidgeEncoderConfig:
        return dataclass_from_dict(cls, d, "encoder")


class RidgeBrainEncoder(PretrainedMixin, nn.Module):
    """Ridge encoding baseline on the same features: ``Y ~ pool(X) @ coef + intercept``, alpha per voxel (LOO)."""

    config_class = RidgeEncoderConfig
    coef: torch.Tensor
    intercept: torch.Tensor
    alpha: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, config: RidgeEncoderConfig | None = None) -> None:
        super().__init__()
        c = self.config = config if config is not None else RidgeEncoderConfig()
        self.register_buffer("coef", torch.zeros(c.n_features, c.n_voxels))
        self.register_buffer("intercept", torch.zeros(c.n_voxels))
        self.register_buffer("alpha", torch.zeros(c.n_voxels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _design(self, X: Any) -> np.ndarray:
        c = self.config
        arr = check_array(X, "X", dtype="float")
        if tuple(arr.shape[1:]) != c.feature_shape:
            raise ShapeMismatchError(format_error("X", f"features of shape (n, {', '.join(map(str, c.feature_shape))})",
                                                  arr, f"Encode the images with the space {c.space!r}"))
        if c.pool == "mean" and arr.ndim > 2:
            return np.asarray(arr.mean(1), dtype=np.float32)
        return np.asarray(arr.reshape(len(arr), -1), dtype=np.float32)

    def fit(self, X: Any, Y: Any, *, device: Any = "cpu", verbose: Any = None) -> RidgeBrainEncoder:
        """Fit every voxel with one shared decomposition (:func:`~neurodecode.models.ridge.ridge_fit`, LOO)."""
        from .ridge import ridge_fit

        Z = self._design(X)
        y = check_array(Y, "Y", ndim=2, dtype="float")
        if y.shape != (len(Z), self.config.n_voxels):
            raise ShapeMismatchError(format_error("Y", f"shape ({len(Z)}, {self.config.n_voxels})", y))
        sol = ridge_fit(Z, y.astype(np.float32), self.config.alphas, cv="loo", alpha_per_target=True,
                        device=device, verbose=verbose)
        with torch.no_grad():
            self.coef.copy_(sol.coef.float().cpu())
            self.intercept.copy_(sol.intercept.float().cpu())
            self.alpha.copy_(sol.best_alphas.float().cpu())
            self.fitted.fill_(True)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Voxel responses ``(n_images, n_voxels)`` for features ``X`` (float32)."""
        if not bool(self.fitted):
            raise NotFittedError(format_error("RidgeBrainEncoder", "a fitted encoder", "an unfitted one",
                                              "Call fit(X, Y) first"))
        Z = torch.as_tensor(self._design(X))
        with torch.no_grad():
            return (torch.addmm(self.intercept, Z, self.coef)).numpy()


# ------------------------------------------------------------------------------------------ loading a run
def _subject_folder(subject: Any) -> str:
    text = str(subject).split("/")[-1]
    digits = text.removeprefix("sub-").removeprefix("subj")
    return f"sub-{int(digits):02d}" if digits.isdigit() else f"sub-{text}"


def load_brain_encoder(run: Any, subject: Any = None, *, model: str = "encoder") -> tuple[Any, str, Any]:
    """A trained encoder of a ``neurodecode train`` run on ``pipelines/brain_encoder_nsd.toml``.

    Parameters
    ----------
    run : path-like
        The run folder, a subject folder (``RUN/sub-01``) or the model folder itself (``RUN/sub-01/encoder``).
    subject : int, str or None
        Which subject of the run (``None``: the only one).
    model : {"encoder", "ridge"}
        The transformer encoder or the ridge baseline.

    Returns
    -------
    model : TransformerBrainEncoder or RidgeBrainEncoder
    space : str
        The latent space of its inputs (``space.json`` beside the weights).
    weights : str or None
        The space's weights as the run used them.
    """
    import json
    from pathlib import Path

    from .._core.errors import MissingFileError

    check_option(model, "model", ("encoder", "ridge"))
    root = Path(run)
    folder = root
    if not (folder / "space.json").is_file():
        subs = sorted(p for p in root.glob("sub-*") if (p / model / "config.json").is_file())
        if (root / model / "config.json").is_file():
            folder = root / model
        elif subject is not None:
            folder = root / _subject_folder(subject) / model
        elif len(subs) == 1:
            folder = subs[0] / model
        else:
            raise MissingFileError(format_error(
                "run", "a brain-encoder run with one subject, or subject=", f"{root} with {len(subs)} subject folders",
                "Pass the subject, or the folder RUN/sub-XX/encoder"))
    if not (folder / "config.json").is_file():
        raise MissingFileError(format_error("run", f"a trained {model} folder (config.json, model.safetensors, "
                                            "space.json)", str(folder),
                                            "Train one with `neurodecode train pipelines/brain_encoder_nsd.toml`"))
    cls = RidgeBrainEncoder if model == "ridge" else TransformerBrainEncoder
    enc = cls.from_pretrained(folder)
    info_path = folder / "space.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return enc, str(info.get("space", enc.config.space)), info.get("weights")
