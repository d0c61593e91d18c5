"""The load tools: `make bench` (:mod:`loadtest.bench`) and `make soak` (:mod:`loadtest.soak`).

They drive the real servers (booted with :class:`devstack.run.Server`) through the embedded AWS
stack of :mod:`devstack`, but are not part of it: devstack emulates AWS, this package loads the
apps and reports what they did.
"""
