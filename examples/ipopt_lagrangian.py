"""A constrained problem solved by Ipopt, with the Lagrangian's Hessian from lazyhess.

Minimise the chained Rosenbrock function (GENROSE) on a ball and with a chain of
equality constraints ``x[i] * x[i + 1] = x[i + 1] ** 2 - 0.1`` for the first few
variables. Ipopt asks for the Hessian of ``sigma * f + lam @ c`` at every iterate, with
new multipliers each time; ``lazyhess.ipopt.IpoptProblem`` detects its pattern once
(the multipliers are runtime arguments, so it holds for all of them), colors it once, and
moves the Hessian to each iterate with ``H.at(x, lam, sigma)``. The lower triangle's
coordinates never change, as Ipopt requires.

Needs cyipopt (``pip install 'lazyhess[ipopt]'``); without it the example checks the
interface at the start point and says so.
"""

import jax
import jax.numpy as jnp
import numpy as np

import lazyhess.ipopt

jax.config.update("jax_enable_x64", True)


def genrose(x):
    return 1.0 + 100.0 * jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum((x[:-1] - 1.0) ** 2)


def chain(k):
    def constraints(x):
        head = x[: k + 1]
        return jnp.concatenate([head[:-1] * head[1:] - head[1:] ** 2 + 0.1, jnp.sum(x**2)[None]])

    return constraints


def main(n: int = 100, k: int = 5):
    x0 = np.full(n, 0.5)
    problem = lazyhess.ipopt.IpoptProblem(genrose, x0, chain(k))
    rows, cols = problem.hessianstructure()
    print(f"n = {n}, m = {problem.m} constraints")
    print(f"Lagrangian Hessian: {len(rows)} entries in the lower triangle")
    print(f"Jacobian: {len(problem.jacobianstructure()[0])} entries")
    try:
        import cyipopt  # noqa: F401
    except ImportError:
        print("cyipopt is not installed (pip install 'lazyhess[ipopt]'): not solving.")
        print(f"Hessian values at x0: {problem.hessian(x0, np.ones(problem.m), 1.0)[:3]} ...")
        return None
    cl = np.concatenate([np.zeros(k), [-np.inf]])
    cu = np.concatenate([np.zeros(k), [n / 2]])
    nlp = problem.problem(cl=cl, cu=cu)
    nlp.add_option("print_level", 0)
    nlp.add_option("sb", "yes")
    x, info = nlp.solve(x0)
    print(f"Ipopt: {info['status_msg'].decode()}")
    print(f"f(x*) = {info['obj_val']:.8f}")
    print(f"max |equality residual| = {np.abs(problem.constraints(x)[:k]).max():.1e}")
    return x, info


if __name__ == "__main__":
    main()
