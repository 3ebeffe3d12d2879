#!/usr/bin/env bash
# Test 49's differential probe (tests/semantics/wire.py: echo, half-close, resets, refused
# connects, backlog, zero window, ping-pong, keepalive, outgoing connections, socket options,
# sends after a reset), with the lwIP engine (--engine lwip) against Linux, without and with 1%
# loss each way. Known difference, printed and left out of the verdict: lwIP's fixed buffers and
# MSS (sockopts_sizes); the urgent-data scenarios are not run (lwIP carries no urgent data).
# Skips as 49 does, and when the agent was built without `--features lwip`.
DIFF_ENGINE=lwip
# shellcheck source=tests/integration/49-user-stack-diff.sh
source "$(dirname "$0")/49-user-stack-diff.sh"
