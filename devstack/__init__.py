"""The embedded default AWS stack: moto (DynamoDB, CloudWatch) and our agent-runtime emulator."""
