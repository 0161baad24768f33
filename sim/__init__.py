"""The real-simulator side: MetaWorld tasks, perturbations, expert episodes, storage and evaluation."""

from sim.gl import configure_gl

configure_gl()
