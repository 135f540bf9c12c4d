"""Recommenders behind one interface (fit / score / recommend / save / load)."""

from .base import Recommender
from .factorization import ALS, BPR
from .hybrid import Hybrid
from .itemknn import ItemKNN
from .popular import MostPopular
from .sasrec import SASRec, SASRecID

MODELS: dict[str, type[Recommender]] = {m.name: m for m in (MostPopular, ItemKNN, ALS, BPR, SASRec, SASRecID,
                                                       Hybrid)}

__all__ = ["ALS", "BPR", "Hybrid", "ItemKNN", "MODELS", "MostPopular", "Recommender", "SASRec", "SASRecID"]
