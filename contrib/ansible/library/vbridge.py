#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Ansible module: make a vbridge desired-state file true on the target host."""

DOCUMENTATION = r'''
module: vbridge
short_description: Put libvirt VMs on the LAN from a vbridge desired-state file
description:
  - Runs C(vbridge apply -o json PLAN) on the target (C(vbridge plan -o json) in check mode)
    and reports what vbridge changed. Diff mode shows the plan's differences.
  - The file format is documented in vbridge's README (Desired state).
options:
  plan:
    description: Path of the desired-state file on the target host.
    required: true
    type: path
  connect:
    description: libvirt URI for hosts of the file that name none (vbridge -c).
    type: str
  binary:
    description: The vbridge program.
    type: str
    default: vbridge
'''

EXAMPLES = r'''
- name: Bridge the web tier
  vbridge:
    plan: /etc/vbridge/web.yml
    connect: qemu:///system
'''

RETURN = r'''
report:
  description: vbridge's JSON report (command, changes, ok, hosts[]).
  returned: when vbridge produced one
  type: dict
'''

import json

from ansible.module_utils.basic import AnsibleModule


def describe(report):
    """The plan's differences as text lines, per host and VM."""
    lines = []
    for host in report.get('hosts', []):
        uri = host.get('uri') or "(libvirt's default URI)"
        for net in host.get('networks') or []:
            if net.get('actions'):
                lines.append('%s network %s (bridge %s): %s' % (
                    uri, net['name'], net['bridge'], ', '.join(net['actions'])))
        for vm in host.get('vms') or []:
            for c in vm.get('changes', []):
                target = ', '.join('%s %s' % kv for kv in c['target'].items())
                diffs = '; '.join('%s %s -> %s' % (d['key'], d['have'], d['want'])
                                  for d in c.get('differences', []))
                lines.append('%s vm %s nic %s: %s on %s (%s) %s' % (
                    uri, vm['name'], c.get('mac') or '(new)', c['action'], target,
                    c['mode'], diffs))
    return lines


def failures(report):
    """vbridge's own messages for everything that failed."""
    out = []
    for host in report.get('hosts', []):
        uri = host.get('uri') or "(libvirt's default URI)"
        if host.get('error'):
            out.append('%s: %s' % (uri, host['error'].get('message')))
        for net in host.get('networks') or []:
            if net.get('error'):
                out.append('%s network %s: %s' % (uri, net['name'], net['error'].get('message')))
        for vm in host.get('vms') or []:
            if vm.get('error'):
                out.append('%s vm %s: %s' % (uri, vm['name'], vm['error'].get('message')))
            verified = vm.get('verified')
            if verified and not verified.get('ok'):
                out.append('%s vm %s: verify failed' % (uri, vm['name']))
    if 'error' in report and not out:
        out.append(report['error'].get('message', str(report['error'])))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            plan=dict(type='path', required=True),
            connect=dict(type='str'),
            binary=dict(type='str', default='vbridge'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    command = 'plan' if module.check_mode else 'apply'
    argv = [p['binary'], command, '-o', 'json', p['plan']]
    if p['connect']:
        argv[2:2] = ['-c', p['connect']]
    # An argument vector, never a shell line.
    rc, out, err = module.run_command(argv)
    try:
        report = json.loads(out)
    except ValueError:
        module.fail_json(msg='vbridge %s failed (exit %d): %s' % (command, rc, (err or out).strip()),
                         rc=rc, cmd=argv)
    if 'error' in report and 'hosts' not in report:
        module.fail_json(msg='vbridge: %s' % report['error'].get('message'), rc=rc, report=report,
                         cmd=argv)
    changed = report.get('changes', 0) > 0
    result = dict(changed=changed, report=report, rc=rc, cmd=argv)
    if module._diff and changed:
        lines = describe(report)
        result['diff'] = dict(before='', after='\n'.join(lines) + '\n',
                              before_header='libvirt now', after_header='plan ' + p['plan'])
    if rc != 0 or not report.get('ok', False):
        module.fail_json(msg='; '.join(failures(report)) or 'vbridge %s failed (exit %d)' % (command, rc),
                         **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
