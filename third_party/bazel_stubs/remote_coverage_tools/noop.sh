#!/bin/sh
# Offline stub for Bazel's coverage tools: does nothing (bazel coverage is unsupported here).
exit 0
