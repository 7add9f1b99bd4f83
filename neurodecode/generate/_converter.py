"""MindEye2's caption route: a linear converter from OpenCLIP bigG patch tokens to GIT image-encoder tokens.

MindEye2 captions its predicted ViT-bigG/14 tokens (256 x 1664) with GIT-large-coco, which reads its own
image-encoder tokens (257 x 1024). In between sits a converter trained on image pairs: a linear map across
tokens (256 -> 257) followed by a linear map across channels (1664 -> 1024), both with biases
(MindEye2 paper, caption section; the released code trains it separately as ``bigG_to_L``). So

    Y = A X B^T + a 1^T B^T + 1 b^T,    A: (257, 256), B: (1024, 1664)

with ``X`` an item's bigG tokens and ``Y`` its GIT tokens. :class:`TokenConverter` fits it by alternating
least squares (closed form per factor; MindEye2 trained it with a gradient optimiser) on paired targets (the ``clip-bigg-14-tokens`` and ``git-large-coco-tokens``
spaces of the same training images), saves it as safetensors, and converts predicted tokens;
:class:`~neurodecode.generate._captions.GitCaptioner` takes it as ``converter=`` to caption ``clip_bigg_tokens``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.validation import format_error

__all__ = ["TokenConverter"]

_FILE = "token_converter.safetensors"


class TokenConverter:
    """Token-mixing then channel-mixing linear map ``(n_in, d_in) -> (n_out, d_out)`` (see the module docstring).

    Parameters
    ----------
    n_in, d_in : int
        Input tokens and width (bigG: 256, 1664; tiny: 16, 48).
    n_out, d_out : int
        Output tokens and width (GIT-large: 257, 1024; tiny: 17, 20).
    seed : int
        Seed of the initialisation and of the minibatch order.
    """

    def __init__(self, n_in: int = 256, d_in: int = 1664, n_out: int = 257, d_out: int = 1024, *, seed: int = 0) -> None:
        import torch

        self.shape_in = (int(n_in), int(d_in))
        self.shape_out = (int(n_out), int(d_out))
        self.seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.tokens = torch.nn.Linear(self.shape_in[0], self.shape_out[0])
            self.channels = torch.nn.Linear(self.shape_in[1], self.shape_out[1])

    def _forward(self, x: Any) -> Any:
        return self.channels(self.tokens(x.transpose(1, 2)).transpose(1, 2))

    def _check(self, arr: Any, shape: tuple[int, int], name: str) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 3 or tuple(arr.shape[1:]) != shape:
            raise ShapeMismatchError(format_error(name, f"an array (n, {shape[0]}, {shape[1]})", arr,
                                                  "Pass the tokens of the converter's spaces"))
        return arr

    def fit(self, X: Any, Y: Any, *, n_iter: int = 15, alpha: float = 1e-6, batch_size: int = 256) -> TokenConverter:
        """Fit on paired tokens by alternating least squares (closed form, deterministic).

        With the token map fixed, the channel map is a ridge regression of ``Y`` on ``A X + a`` (one
        row per token); with the channel map fixed, the token map is a ridge regression of
        ``Y - b`` on ``X B^T`` (one column per channel). Normal equations are accumulated over
        batches of ``batch_size`` items, so memory does not grow with the number of items.

        Parameters
        ----------
        X : ndarray of shape (n, n_in, d_in)
            Source tokens (e.g. ``clip-bigg-14-tokens`` of the training images).
        Y : ndarray of shape (n, n_out, d_out)
            Target tokens of the same images (``git-large-coco-tokens``).
        n_iter : int
            Alternations.
        alpha : float
            Ridge penalty, relative to the mean diagonal of each Gram matrix.
        batch_size : int
            Items per accumulation step.

        Returns
        -------
        self
        """
        import torch

        X = self._check(X, self.shape_in, "X")
        Y = self._check(Y, self.shape_out, "Y")
        if len(X) != len(Y) or len(X) == 0:
            raise ValidationError(format_error("Y", f"{len(X)} items paired with X", len(Y)))
        (n_in, d_in), (n_out, d_out) = self.shape_in, self.shape_out
        f64 = torch.float64
        A = self.tokens.weight.detach().to(f64).clone()
        a = torch.zeros(n_out, dtype=f64)
        B = torch.zeros(d_out, d_in, dtype=f64)
        b = torch.zeros(d_out, dtype=f64)
        bs = int(batch_size)

        def batches() -> Any:
            for start in range(0, len(X), bs):
                yield (torch.from_numpy(X[start:start + bs]).to(f64), torch.from_numpy(Y[start:start + bs]).to(f64))

        def ridge(gram: Any, rhs: Any) -> Any:
            lam = float(alpha) * float(gram.diagonal().mean()) + 1e-12
            return torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=f64), rhs)

        self.loss_: list[float] = []
        for _ in range(int(n_iter)):
            # channel map: rows = tokens of every item, features [A X + a, 1]
            gram = torch.zeros(d_in + 1, d_in + 1, dtype=f64)
            rhs = torch.zeros(d_in + 1, d_out, dtype=f64)
            for xb, yb in batches():
                feats = torch.cat([A @ xb + a[:, None], torch.ones(len(xb), n_out, 1, dtype=f64)], dim=2)
                feats = feats.reshape(-1, d_in + 1)
                gram += feats.T @ feats
                rhs += feats.T @ yb.reshape(-1, d_out)
            W = ridge(gram, rhs)
            B, b = W[:d_in].T.contiguous(), W[d_in]
            # token map: columns = channels of every item, features [X B^T ; (B 1)^T]
            s = B.sum(dim=1)
            gram = torch.zeros(n_in + 1, n_in + 1, dtype=f64)
            rhs = torch.zeros(n_in + 1, n_out, dtype=f64)
            for xb, yb in batches():
                feats = torch.cat([xb @ B.T, s.expand(len(xb), 1, d_out)], dim=1)  # (m, n_in + 1, d_out)
                feats = feats.transpose(1, 2).reshape(-1, n_in + 1)
                target = (yb - b).transpose(1, 2).reshape(-1, n_out)
                gram += feats.T @ feats
                rhs += feats.T @ target
            W = ridge(gram, rhs)
            A, a = W[:n_in].T.contiguous(), W[n_in]
            sse = sum(float(((((A @ xb + a[:, None]) @ B.T) + b) - yb).pow(2).sum()) for xb, yb in batches())
            self.loss_.append(sse / Y.size)
        with torch.no_grad():
            self.tokens.weight.copy_(A.float())
            self.tokens.bias.copy_(a.float())
            self.channels.weight.copy_(B.float())
            self.channels.bias.copy_(b.float())
        return self

    def convert(self, X: Any) -> np.ndarray:
        """Source tokens ``(n, n_in, d_in)`` -> target tokens ``(n, n_out, d_out)`` (float32)."""
        import torch

        X = self._check(X, self.shape_in, "X")
        with torch.inference_mode():
            return self._forward(torch.from_numpy(X)).numpy().astype(np.float32)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``token_converter.safetensors`` (shapes in its metadata) into ``folder``."""
        from ..io.checkpoints import save_state_dict

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {f"tokens.{k}": v.detach() for k, v in self.tokens.state_dict().items()}
        state.update({f"channels.{k}": v.detach() for k, v in self.channels.state_dict().items()})
        save_state_dict(state, folder / _FILE, metadata={"shape_in": str(list(self.shape_in)),
                                                          "shape_out": str(list(self.shape_out))})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> TokenConverter:
        """Read a converter written by :meth:`save` (a folder or the file itself)."""
        from ..io.checkpoints import load_state_dict

        path = Path(folder)
        path = path / _FILE if path.is_dir() else path
        state = load_state_dict(path)
        n_out, n_in = state["tokens.weight"].shape
        d_out, d_in = state["channels.weight"].shape
        conv = cls(int(n_in), int(d_in), int(n_out), int(d_out))
        conv.tokens.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("tokens.")})
        conv.channels.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("channels.")})
        return conv
