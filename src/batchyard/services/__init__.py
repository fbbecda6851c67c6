"""The rules: what each resource may do, with Azure's error codes. No HTTP here."""
