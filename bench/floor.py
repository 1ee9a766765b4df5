#!/usr/bin/python3
"""The floor for `vbridge attach`: one libvirt connection doing only what any tool must do per
VM -- look it up, read its persistent XML, define the changed XML -- with a plain string
replace as the edit. Usage: floor.py URI BRIDGE VM..."""
import sys
import time

import libvirt

uri, bridge, names = sys.argv[1], sys.argv[2], sys.argv[3:]
libvirt.registerErrorHandler(lambda *_: None, None)
start = time.monotonic()
conn = libvirt.open(uri)
flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
for name in names:
    dom = conn.lookupByName(name)
    xml = dom.XMLDesc(flags)
    xml = xml.replace("<interface type='network'>", "<interface type='bridge'>", 1)
    xml = xml.replace("<source network='default'/>", "<source bridge='%s'/>" % bridge, 1)
    conn.defineXML(xml)
conn.close()
print("%.6f" % (time.monotonic() - start))
