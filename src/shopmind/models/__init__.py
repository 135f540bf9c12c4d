"""Recommenders behind one interface (fit / score / recommend / save / load)."""

from .base import Recommender
from .factorization import ALS, BPR
from .itemknn import ItemKNN
from .popular import MostPopular

MODELS: dict[str, type[Recommender]] = {m.name: m for m in (MostPopular, ItemKNN, ALS, BPR)}

__all__ = ["ALS", "BPR", "ItemKNN", "MODELS", "MostPopular", "Recommender"]
