/**
 * The JSON document of an inspection (keys as virt-inspector's XML elements), shared by
 * `diskhub img inspect --output=json` and the image service's x-diskhub/inside, so both say
 * the same thing in the same words. Documented in the README ("diskhub img inspect").
 */
import type { InspectedOs, OsInspection } from './index.js';
import { splitPackageVersion } from './packages.js';
import { osinfoOf } from './osinfo.js';

export function inspectedOsJson(os: InspectedOs) {
  return {
    root: os.root,
    name: os.type,
    arch: os.arch,
    distro: os.distro,
    product_name: os.productName,
    major_version: os.majorVersion,
    minor_version: os.minorVersion,
    hostname: os.hostname,
    osinfo: osinfoOf(os.type, os.distro, os.majorVersion, os.minorVersion),
    package_format: os.packageFormat,
    package_management: os.packageManagement,
    mountpoints: os.mountpoints.map((m) => ({ mountpoint: m.mountpoint, device: m.device, spec: m.spec, fstype: m.fstype })),
    kernels: os.kernels.map((k) => ({ version: k.version, path: k.path, initramfs: k.initramfs })),
    bootloader: os.bootLoader && {
      type: os.bootLoader.type,
      config: os.bootLoader.config,
      grub_defaults: os.bootLoader.defaults,
      entries: os.bootLoader.entries.map((e) => ({ title: e.title, kernel: e.kernel, cmdline: e.cmdline })),
    },
    cloud_init: os.cloudInit && { config_files: os.cloudInit.configFiles, datasource_list: os.cloudInit.datasourceList, datasource_list_from: os.cloudInit.datasourceListFrom },
    users: os.users.map((u) => ({ name: u.name, uid: u.uid, gid: u.gid, home: u.home, shell: u.shell, password: u.password })),
    // virt-inspector's <application>: epoch, version and release apart (splitPackageVersion).
    applications: os.packages && os.packages.map((p) => ({ name: p.name, ...splitPackageVersion(p.version), arch: p.arch })),
    notes: os.notes,
  };
}

export function inspectionJson(r: OsInspection) {
  return {
    operatingsystems: r.operatingSystems.map(inspectedOsJson),
    filesystems: r.filesystems.map((f) => ({ device: f.device, where: f.where, type: f.type, uuid: f.uuid ?? null, label: f.label ?? null, readable: f.readable })),
  };
}
