"""Datasets: loaders for NSD, THINGS-EEG2, THINGS-MEG and ZuCo returning :class:`Trials`."""

from ._trials import Trials

__all__ = ["Trials"]
