"""Everything both colors decide the same way: contracts, settings, errors and domain rules.

No network I/O lives here. Each app is a thin driver around these modules: blue runs the flows in
:mod:`shared.flows` with boto3, green with aioboto3.
"""

__version__ = "0.1.0"
