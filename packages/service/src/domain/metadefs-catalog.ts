/**
 * The built-in metadata definitions: image properties that compute services read (hw_*,
 * os_*, img_* and friends), grouped in namespaces as Glance's metadefs API presents them,
 * with their types and allowed values. Written for diskhub from the properties' documented
 * meaning; read by the dashboard to offer known keys with validation.
 */
export interface PropertyDef {
  title: string;
  description: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'array';
  enum?: string[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  readonly?: boolean;
}

export interface NamespaceDef {
  namespace: string;
  display_name: string;
  description: string;
  resource_types: { name: string; prefix?: string; properties_target?: string }[];
  properties: Record<string, PropertyDef>;
  tags?: string[];
}

const IMAGE = { name: 'OS::Glance::Image' };

export const NAMESPACES: NamespaceDef[] = [
  {
    namespace: 'OS::Compute::LibvirtImage',
    display_name: 'libvirt driver options for images',
    description: 'Devices and buses the libvirt compute driver gives a guest booted from this image.',
    resource_types: [IMAGE],
    properties: {
      hw_disk_bus: { title: 'Disk bus', description: 'Bus the root disk is attached to.', type: 'string', enum: ['scsi', 'virtio', 'uml', 'xen', 'ide', 'usb', 'fdc', 'sata', 'lxc'] },
      hw_cdrom_bus: { title: 'CD-ROM bus', description: 'Bus CD-ROM devices are attached to.', type: 'string', enum: ['scsi', 'virtio', 'uml', 'xen', 'ide', 'usb', 'sata'] },
      hw_scsi_model: { title: 'SCSI model', description: 'SCSI controller model (virtio-scsi for many disks, discard support).', type: 'string', enum: ['virtio-scsi', 'lsilogic', 'lsisas1068', 'buslogic', 'ibmvscsi', 'vmpvscsi'] },
      hw_vif_model: { title: 'Network card model', description: 'Model of the virtual network interface.', type: 'string', enum: ['e1000', 'e1000e', 'ne2k_pci', 'pcnet', 'rtl8139', 'virtio', 'vmxnet', 'vmxnet3', 'spapr-vlan'] },
      hw_video_model: { title: 'Video model', description: 'Model of the virtual graphics adapter.', type: 'string', enum: ['vga', 'cirrus', 'vmvga', 'xen', 'qxl', 'virtio', 'gop', 'none', 'bochs'] },
      hw_video_ram: { title: 'Video RAM', description: 'Video memory in MiB (bounded by the flavor).', type: 'integer', minimum: 0 },
      hw_machine_type: { title: 'Machine type', description: 'QEMU machine type, for example q35 or pc.', type: 'string' },
      hw_firmware_type: { title: 'Firmware', description: 'Firmware the guest boots with.', type: 'string', enum: ['bios', 'uefi'] },
      hw_boot_menu: { title: 'Boot menu', description: 'Show the BIOS boot menu.', type: 'boolean' },
      hw_qemu_guest_agent: { title: 'QEMU guest agent', description: 'The image runs the QEMU guest agent; add its channel.', type: 'boolean', default: false },
      hw_rng_model: { title: 'Random number generator', description: 'Paravirtual entropy device model.', type: 'string', enum: ['virtio'] },
      hw_pointer_model: { title: 'Pointer model', description: 'Input pointer device.', type: 'string', enum: ['usbtablet'] },
      hw_vif_multiqueue_enabled: { title: 'Multiqueue networking', description: 'One virtio-net queue per vCPU.', type: 'boolean' },
    },
  },
  {
    namespace: 'OS::Compute::CPUTopology',
    display_name: 'Virtual CPU topology',
    description: 'Preferred and maximum sockets, cores and threads for the guest CPUs.',
    resource_types: [IMAGE],
    properties: {
      hw_cpu_sockets: { title: 'Sockets', description: 'Preferred number of CPU sockets.', type: 'integer', minimum: 1 },
      hw_cpu_cores: { title: 'Cores', description: 'Preferred number of cores per socket.', type: 'integer', minimum: 1 },
      hw_cpu_threads: { title: 'Threads', description: 'Preferred number of threads per core.', type: 'integer', minimum: 1 },
      hw_cpu_max_sockets: { title: 'Max sockets', description: 'Largest number of sockets the guest supports.', type: 'integer', minimum: 1 },
      hw_cpu_max_cores: { title: 'Max cores', description: 'Largest number of cores per socket the guest supports.', type: 'integer', minimum: 1 },
      hw_cpu_max_threads: { title: 'Max threads', description: 'Largest number of threads per core the guest supports.', type: 'integer', minimum: 1 },
    },
  },
  {
    namespace: 'OS::Compute::Watchdog',
    display_name: 'Watchdog behaviour',
    description: 'What the hypervisor does when the guest stops feeding its watchdog.',
    resource_types: [IMAGE],
    properties: {
      hw_watchdog_action: { title: 'Watchdog action', description: 'Action on a watchdog timeout.', type: 'string', enum: ['disabled', 'reset', 'poweroff', 'pause', 'none'] },
    },
  },
  {
    namespace: 'OS::Compute::Hypervisor',
    display_name: 'Hypervisor selection',
    description: 'Which hypervisor and virtualisation mode the image needs.',
    resource_types: [IMAGE],
    properties: {
      hypervisor_type: { title: 'Hypervisor type', description: 'Hypervisor the image runs on.', type: 'string', enum: ['baremetal', 'hyperv', 'kvm', 'lxc', 'qemu', 'uml', 'vmware', 'vz', 'xen'] },
      vm_mode: { title: 'VM mode', description: 'Virtualisation mode the image needs.', type: 'string', enum: ['hvm', 'xen', 'uml', 'exe'] },
      img_hv_requested_version: { title: 'Hypervisor version', description: 'Version range of the hypervisor, for example ">=6000".', type: 'string' },
    },
  },
  {
    namespace: 'OS::OperatingSystem',
    display_name: 'Operating system',
    description: 'What is installed in the image.',
    resource_types: [IMAGE, { name: 'OS::Cinder::Volume', properties_target: 'image' }],
    properties: {
      os_distro: { title: 'Distribution', description: 'Distribution name in lower case (arch, centos, debian, fedora, freebsd, rhel, ubuntu, windows, ...).', type: 'string' },
      os_version: { title: 'Version', description: 'Distribution version, for example 12 or 22.04.', type: 'string' },
      os_type: { title: 'OS type', description: 'Operating system family.', type: 'string', enum: ['linux', 'windows'] },
      os_admin_user: { title: 'Admin user', description: 'Name of the administrator account in the image.', type: 'string' },
      os_require_quiesce: { title: 'Require quiesce', description: 'Snapshots must quiesce the file systems through the guest agent.', type: 'boolean' },
      architecture: { title: 'Architecture', description: 'CPU architecture the image needs.', type: 'string', enum: ['aarch64', 'armv7l', 'i686', 'ppc64le', 's390x', 'x86_64', 'riscv64'] },
    },
  },
  {
    namespace: 'OS::Glance::CommonImageProperties',
    display_name: 'Common image properties',
    description: 'Properties many images carry; also shown by the dashboard when editing an image.',
    resource_types: [IMAGE],
    properties: {
      description: { title: 'Description', description: 'Free text about the image.', type: 'string' },
      img_config_drive: { title: 'Config drive', description: 'Whether instances of this image need a config drive.', type: 'string', enum: ['optional', 'mandatory'] },
      img_signature_hash_method: { title: 'Signature hash', description: 'Hash algorithm of the image signature.', type: 'string', enum: ['SHA-224', 'SHA-256', 'SHA-384', 'SHA-512'] },
      instance_uuid: { title: 'Instance', description: 'Instance this image was snapshotted from (informational).', type: 'string' },
    },
  },
];

export const RESOURCE_TYPES = ['OS::Glance::Image', 'OS::Cinder::Volume', 'OS::Nova::Flavor', 'OS::Nova::Server'];
