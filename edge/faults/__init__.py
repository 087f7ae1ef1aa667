"""Fault injection for resilience tests: fault models, a fast campaign engine and campaign statistics.

    edge.faults
    ├── models       FaultModel, FaultMap, FaultTargets, sample_fault_map, apply_fault_map / injected
    ├── engine       WeightFaultEngine (targets as graph inputs, one session), rebuild_and_run (slow reference)
    ├── campaign     run_campaign -> CampaignResult (accuracy, masked/SDC/DUE vs BER), vulnerability
    ├── activations  run_activation_campaign (one in-graph bit flip per inference)
    └── statistics   sample_size (Leveugle), achieved_margin, wilson / clopper_pearson / mean intervals

>>> from edge.faults import FaultModel, run_campaign
>>> result = run_campaign(artifact, x, y, bers=(1e-6, 1e-5), maps=100, fault=FaultModel(bits="exponent"))
>>> result.points()[1]["accuracy"]
"""

from __future__ import annotations

from edge.faults.activations import ActivationCampaignResult, ActivationFaultEngine, run_activation_campaign
from edge.faults.campaign import DEFAULT_BERS, CampaignResult, MapOutcome, map_seed, run_campaign, vulnerability
from edge.faults.engine import WeightFaultEngine, rebuild_and_run, weights_as_inputs
from edge.faults.models import (
    Fault,
    FaultMap,
    FaultModel,
    FaultTargets,
    apply_fault_map,
    injected,
    sample_fault_map,
    select_targets,
)
from edge.faults.statistics import (
    achieved_margin,
    clopper_pearson_interval,
    mean_interval,
    sample_size,
    two_sided_quantile,
    wilson_interval,
)

__all__ = [
    "DEFAULT_BERS",
    "ActivationCampaignResult",
    "ActivationFaultEngine",
    "CampaignResult",
    "Fault",
    "FaultMap",
    "FaultModel",
    "FaultTargets",
    "MapOutcome",
    "WeightFaultEngine",
    "achieved_margin",
    "apply_fault_map",
    "clopper_pearson_interval",
    "injected",
    "map_seed",
    "mean_interval",
    "rebuild_and_run",
    "run_activation_campaign",
    "run_campaign",
    "sample_fault_map",
    "sample_size",
    "select_targets",
    "two_sided_quantile",
    "vulnerability",
    "weights_as_inputs",
    "wilson_interval",
]
