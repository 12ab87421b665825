"""The training configs that come with dpr-jax: ``tiny``, ``squad`` and ``nq`` (``--config squad``).

This directory is the one copy; an installed dpr-jax carries it as the package ``dpr_jax.configs``
(see setup.cfg). Each file's ``get_config()`` starts from ``dpr_jax.train.config.base_config``.
"""
