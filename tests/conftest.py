import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)
# The suite compiles thousands of small programs and runs most of them once, so LLVM's
# optimisation passes cost more than they save: this cuts the quick tier's CPU time by about
# a sixth. XLA's HLO passes still run; results are the same to the tests' tolerances.
jax.config.update("jax_disable_most_optimizations", True)
settings.register_profile("lazyhess", derandomize=True, deadline=None)
settings.load_profile("lazyhess")
