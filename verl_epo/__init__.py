"""verl-epo: EPO (Entropy-regularized Policy Optimization, arXiv 2509.22576) as a verl plug-in.

- ``verl_epo.algorithm``: EPO's math, pure torch (no verl import).
- ``verl_epo.config``: the ``epo:`` config section.
- ``verl_epo.row_keys`` / ``verl_epo.step_terms`` / ``verl_epo.loss`` / ``verl_epo.trainer``: the
  integration with verl; ``trainer.v1.trainer_mode=epo`` selects it.
- ``verl_epo.analysis``: reading training runs, tables, figures, ``verl-epo-report``.
- ``verl_epo.plugin``: what verl's ``verl.plugins`` entry point imports in every process.
"""
