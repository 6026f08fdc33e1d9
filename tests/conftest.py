"""Test-session setup: jaxlearn's CPU backend settings, applied before any test computes.

`import jaxlearn` changes nothing in the process, so the suite applies
`jaxlearn.configure_cpu()` itself, as the scripts do, before JAX's backend starts.
"""

import jaxlearn

jaxlearn.configure_cpu()
