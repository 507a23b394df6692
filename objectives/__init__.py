"""Training objectives: one file each, pure torch (no Lightning)."""

from objectives.base import LossOutput, Objective, ObjectiveContext

__all__ = ["LossOutput", "Objective", "ObjectiveContext"]
