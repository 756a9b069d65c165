import jax

jax.config.update("jax_enable_x64", True)
from hypothesis import settings

settings.register_profile("lazyhess", derandomize=True, deadline=None)
settings.load_profile("lazyhess")
