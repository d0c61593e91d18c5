"""The infrastructure as code: the CloudFormation template (generated from the single sources in
``shared/`` and the cutover plan), the task roles' policies, ``stack plan|apply``, ``release``,
``report`` and ``preflight`` (``python -m deploy ...``)."""
