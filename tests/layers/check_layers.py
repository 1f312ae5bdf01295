#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The layering, declared once and checked (suite 'layers', and .ci/run).

Folders from the bottom up: each may include headers of its own folder and of
the layers below it, never above. Folders on one line are one layer and may
not include each other. tests/ may include everything, except
tests/conformance/, which must include nothing of the project: it is an
independent reading of the spec.

Fails, naming file and line, on an include that points upward or sideways, on
an include this script cannot place, and on any cycle between folders.
"""
import os
import re
import sys

LAYERS = [
    ['common'],             # logging, helpers, crc32, the virtio spec
    ['proto'],              # vhost-user: messages, endpoint, front-end, back-end requests
    ['engine'],             # io_uring loop, dispatcher, guest memory, virtqueues, inflight
    ['host'],               # the device host: sessions, rings on engines, memory, log, state
    ['devices/net'],        # devices (virtio-net and its ports)
    ['backends'],           # the VMM-side interface and its four implementations
    ['tools', 'bench'],     # programs
]
INDEPENDENT = ['tests/conformance']
ANYTHING = ['tests']

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main(top):
    level, owner = {}, {}
    for i, folders in enumerate(LAYERS):
        for d in folders:
            level[d] = i
            for f in os.listdir(os.path.join(top, d)):
                if f.endswith('.h'):
                    if f in owner:
                        return fail([f'{d}/{f}: header name also in {owner[f]}/'])
                    owner[f] = d
    test_headers = {f for r, _, fs in os.walk(os.path.join(top, 'tests'))
                    for f in fs if f.endswith('.h')}
    errors, edges = [], set()
    for root, _, names in os.walk(top):
        rel = os.path.relpath(root, top)
        if rel.startswith(('build', '.')) and rel != '.':
            continue
        for name in names:
            if not name.endswith(('.c', '.h')):
                continue
            path = os.path.join(rel, name)
            src = next((d for d in level if rel == d), None)
            indep = any(rel == d or rel.startswith(d + '/') for d in INDEPENDENT)
            free = not src and any(rel == d or rel.startswith(d + '/') for d in ANYTHING)
            if not src and not indep and not free:
                continue
            text = open(os.path.join(top, path), encoding='utf-8').read()
            for m in INCLUDE.finditer(text):
                inc, line = m.group(1), text.count('\n', 0, m.start()) + 1
                base = os.path.basename(inc)
                if os.path.exists(os.path.join(top, rel, inc)):
                    dst = rel          # a header of its own folder
                elif base in owner:
                    dst = owner[base]
                elif free and base in test_headers:
                    continue           # the tests' own helpers
                else:
                    errors.append(f'{path}:{line}: "{inc}" is no header of a declared layer')
                    continue
                if indep and dst != rel:
                    errors.append(f'{path}:{line}: includes "{inc}" ({dst}/): '
                                  f'{rel}/ must stay independent of the project')
                if not src or dst == src:
                    continue
                edges.add((src, dst))
                if level[dst] >= level[src]:
                    way = 'sideways' if level[dst] == level[src] else 'upward'
                    errors.append(f'{path}:{line}: includes "{inc}" from {dst}/: '
                                  f'{way} ({src}/ is layer {level[src]}, '
                                  f'{dst}/ layer {level[dst]})')
    cycle = find_cycle(edges)
    if cycle:
        errors.append('cycle between folders: ' + ' -> '.join(cycle))
    if errors:
        return fail(errors)
    print(f'layers: {len(level)} folders in {len(LAYERS)} layers, '
          f'{len(edges)} folder dependencies, all pointing down')
    return 0


def find_cycle(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    state = {}

    def visit(n, path):
        state[n] = 1
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return path + [n, m]
            if not state.get(m) and (c := visit(m, path + [n])):
                return c
        state[n] = 2
        return None

    for n in list(graph):
        if not state.get(n) and (c := visit(n, [])):
            return c
    return None


def fail(errors):
    for e in errors:
        print('layers: FAIL:', e)
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')))
