import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)
settings.register_profile("lazyhess", derandomize=True, deadline=None)
settings.load_profile("lazyhess")
