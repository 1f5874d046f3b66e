"""One line: per-sample losses ℓ_i(θ_t + s·d_t) at many positions s, with interval enlargement.

The surface other packages use: :func:`~steplines.engine.factory.make_engine` (the one
factory, from a :class:`~steplines.config.EngineConfig`), the batch and policy it evaluates
(:mod:`~steplines.engine.common`), :func:`~steplines.engine.line.measure_line` and the grid
(:mod:`~steplines.engine.positions`), precision (:mod:`~steplines.engine.precision`) and the
estimators' inputs (:mod:`~steplines.engine.estimators`). The engines themselves —
:mod:`~steplines.engine.reference`, :mod:`~steplines.engine.fast` (its BatchNorm in
:mod:`~steplines.engine.batchnorm`) and :mod:`~steplines.engine.workers` — are reached through
the factory. Nothing is imported here: ``python -m steplines.engine.workers`` starts a worker
without the rest of the engine, and nothing in ``engine/`` imports ``steplines.measure``.
"""
