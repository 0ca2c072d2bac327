"""EK-FAC curvature: factor state, covariance and lambda passes, eigendecomposition, strategies.

    factors = fit_factors(model, layers, batches, FactorArgs(), Placement(mesh))
    ihvp = precondition("ekfac", factors[path], grads, DampingArgs())

See DESIGN.md §2 for the conventions (a, g, A, S, lambdas, damping).
"""

from infljax.curvature.eigen import NonFiniteFactorError, eigendecompose, safe_eigh
from infljax.curvature.passes import (
    FISHERS,
    FactorArgs,
    check_finite_parameters,
    covariance_pass,
    fit_factors,
    lambda_pass,
    layer_shapes,
)
from infljax.curvature.state import (
    Counts,
    CovarianceSums,
    Eigenbasis,
    Factors,
    LambdaSums,
    LayerFactors,
    Statistics,
    build_factors,
    merge_all,
)
from infljax.curvature.storage import load_factors, open_factors, save_factors
from infljax.curvature.strategies import (
    STRATEGIES,
    DampingArgs,
    curvature_eigenvalues,
    curvature_matrix,
    damping_value,
    precondition,
)

__all__ = [
    "FISHERS",
    "STRATEGIES",
    "Counts",
    "CovarianceSums",
    "DampingArgs",
    "Eigenbasis",
    "FactorArgs",
    "Factors",
    "LambdaSums",
    "LayerFactors",
    "NonFiniteFactorError",
    "Statistics",
    "build_factors",
    "check_finite_parameters",
    "covariance_pass",
    "curvature_eigenvalues",
    "curvature_matrix",
    "damping_value",
    "eigendecompose",
    "fit_factors",
    "lambda_pass",
    "layer_shapes",
    "load_factors",
    "open_factors",
    "merge_all",
    "precondition",
    "safe_eigh",
    "save_factors",
]
