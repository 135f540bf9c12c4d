"""Recommenders behind one interface (fit / score / recommend / save / load)."""

from .base import Recommender
from .factorization import ALS, BPR
from .hybrid import Hybrid
from .itemknn import ItemKNN
from .lightgcn import LightGCN
from .popular import MostPopular, PopularInCategory
from .sasrec import SASRec, SASRecID
from .twotower import TwoTower, TwoTowerID

MODELS: dict[str, type[Recommender]] = {m.name: m for m in (MostPopular, PopularInCategory, ItemKNN, ALS, BPR, LightGCN, TwoTower,
                                                       TwoTowerID, SASRec, SASRecID, Hybrid)}

__all__ = ["ALS", "BPR", "Hybrid", "ItemKNN", "LightGCN", "MODELS", "MostPopular", "PopularInCategory", "Recommender", "SASRec",
           "SASRecID", "TwoTower", "TwoTowerID"]
