"""seeknal_core: interval tracking for incremental SQL pipelines (framework-agnostic)."""

from .intervals import Interval, IntervalCalculator, IntervalSet, create_interval_calculator
from .schedule import Schedule

__all__ = [
    "Interval",
    "IntervalCalculator",
    "IntervalSet",
    "Schedule",
    "create_interval_calculator",
]
__version__ = "0.1.0"
