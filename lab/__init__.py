"""The lab: demo services and fault scenarios, used by ``jitrace demo``, ``jitrace lab`` and the tests."""
