"""Assembles the service from its parts: store, runtime, services."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import azure_names, defaults
from .config import Settings
from .private_files import private_dir
from .runtime import hostfs
from .runtime.host import choose_provider
from .runtime.layers import LayerStore
from .runtime.provider import CONTAINERS, MachineProvider
from .services.batch.accounts import BatchAccounts
from .services.batch.allocation import Allocator
from .services.batch.applications import Applications
from .services.batch.auto_storage import AutoStorage
from .services.batch.package_install import PackageInstaller
from .services.batch.storage_files import Transfers
from .services.batch.task_users import TaskUsers
from .services.storage_accounts import StorageAccounts, configured
from .services.batch.autoscale.autoscaler import Autoscaler
from .services.batch.autoscale.metrics import PoolMetrics
from .services.batch.node_agent import NodeAgent, node_place
from .services.batch.auto_pools import AutoPools
from .services.batch.job_schedules import JobSchedules
from .services.batch.task_tokens import TaskTokens
from .services.batch.jobs import Jobs
from .services.batch.management_pools import ManagementPools
from .services.batch.pools import Pools
from .services.batch.scheduler import Scheduler
from .services.batch.tasks import Tasks
from .store.batch_tasks import TaskStore
from .store.batch_nodes import NodeStore
from .services.compute.catalog import PUBLISHER, BaseImage, Catalog
from .services.compute.image_aliases import FILE_NAME as IMAGE_ALIASES
from .services.compute.image_aliases import HOST, ImageAliases
from .services.compute.disks import DISK_TYPE, SNAPSHOT_TYPE, Disks
from .services.compute.galleries import Galleries
from .services.compute.image_sources import ImageSources
from .services.compute.images import IMAGE_TYPE, Images
from .services.compute.vms import VirtualMachines
from .services.authorization import Authorization
from .services.identity import Identity
from .services.resource_groups import ResourceGroups
from .services.secrets import SecretBox
from .services.sign_in_limits import SignInLimits
from .services.reconciliation import remove_unrecorded
from .services.storage import Storage
from .store.db import Database
from .store.reserve import SpaceReserve
from .store.resources import ResourceStore

log = logging.getLogger("batchyard")


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ResourceStore
    identity: Identity
    authorization: Authorization
    groups: ResourceGroups
    layers: LayerStore
    provider: MachineProvider
    provider_note: str
    catalog: Catalog
    storage: Storage
    disks: Disks
    images: Images
    vms: VirtualMachines
    galleries: Galleries
    accounts: BatchAccounts
    pools: Pools
    allocator: Allocator
    jobs: Jobs
    tasks: Tasks
    scheduler: Scheduler
    autoscaler: Autoscaler
    job_schedules: JobSchedules
    auto_pools: AutoPools
    task_tokens: TaskTokens
    management_pools: ManagementPools
    auto_storage: AutoStorage
    applications: Applications
    # the development principal's secret, for connection.json (never logged, never in the banner)
    client_secret: str
    reserve: SpaceReserve

    def close(self) -> None:
        self.reserve.stop()
        self.auto_pools.stop()
        self.job_schedules.stop()
        self.autoscaler.stop()
        self.scheduler.stop()
        self.allocator.stop()
        self.provider.stop_all()
        self.db.close()


def _machines_base_url(settings: Settings, provider: MachineProvider) -> str:
    """The service as machines reach it: through the gateway of their network, if they have one."""
    if provider.service_address is None:
        return settings.base_url
    return f"{settings.scheme}://{provider.service_address}:{settings.port}"


def build(settings: Settings, namespaces: bool, provider: MachineProvider | None = None) -> Services:
    """Every service over the data directory; machines from `provider` when given (the
    in-memory fake, in rule tests), else from the host (see runtime/host.py)."""
    data = settings.data_dir
    private_dir(data)
    db = Database(data / "batchyard.db")
    store = ResourceStore(db)
    box = SecretBox(data / "keys" / "secrets.key")
    sign_in_limits = SignInLimits(settings.sign_in_failures_per_client, settings.sign_in_failures_per_address,
                                  settings.sign_in_window_seconds)
    identity = Identity(db, data / "keys", box, sign_in_limits, issuer_bases=lambda: issuer_bases(settings))
    client_secret = identity.ensure_default_principal(settings.dev_credentials)
    groups = ResourceGroups(db, store)
    groups.ensure_subscription(defaults.SUBSCRIPTION_ID, defaults.TENANT_ID, "Batchyard development")
    authorization = Authorization(db, identity, groups)
    authorization.ensure_development_roles()
    identity.on_delete(authorization.delete_for_principal)
    if not groups.exists(defaults.SUBSCRIPTION_ID, defaults.RESOURCE_GROUP):
        groups.create_or_update(defaults.SUBSCRIPTION_ID, defaults.RESOURCE_GROUP, {"location": defaults.LOCATION})

    layers = LayerStore(data / "runtime" / "layers")
    if settings.isolation == "off":
        namespaces = False
    if provider is None and settings.ray_address:
        from .runtime.ray_provider import RayProvider  # Ray is imported only for a cluster

        provider = RayProvider(settings.ray_address, settings.ray_host_dir, data / "runtime", layers,
                               pack=settings.ray_placement == "pack", overcommit=settings.host_overcommit,
                               cgroups=settings.node_cgroups != "off", networks=settings.node_networks != "off",
                               outbound_nat=settings.outbound_nat)
        note = f"machines: on the Ray cluster at {settings.ray_address}, {len(provider.hosts)} hosts " \
               f"({', '.join(sorted(provider.capabilities))} on every host)"
    elif provider is not None:
        note = f"machines: {provider.mode}"
    else:
        provider, note = choose_provider(data / "runtime", layers, namespaces, settings.fakechroot,
                                         cgroups=settings.node_cgroups != "off",
                                         networks=settings.node_networks != "off",
                                         outbound_nat=settings.outbound_nat,
                                         registry_ca_bundle=settings.registry_ca_bundle)
    aliases = ImageAliases(data / IMAGE_ALIASES)
    aliases.ensure_file()
    catalog = Catalog(db, aliases, containers=CONTAINERS in provider.capabilities)
    _register_host_image(catalog, layers, data)
    storage = Storage(store, layers, catalog.layers)
    image_sources = ImageSources(store)
    disks = Disks(store, provider, layers, storage, catalog, data / "uploads", image_sources)
    images = Images(store, disks, storage)
    galleries = Galleries(store, images, storage, provider)
    vms = VirtualMachines(store, provider, disks, images, catalog, storage, settings.run_command_timeout)
    accounts = BatchAccounts(store, groups, box)
    if accounts.seal_plaintext_keys():
        db.compact()  # no plaintext key may linger in free pages
    accounts.ensure_default(settings.dev_credentials)
    storage_account = configured(settings.storage_connection_string, settings.storage_blob_endpoint,
                                 settings.storage_account, settings.storage_account_key)
    storage_accounts = StorageAccounts([storage_account] if storage_account is not None else [])
    auto_storage = AutoStorage(accounts, storage_accounts)
    applications = Applications(store, accounts, auto_storage, data / "scratch")
    packages = PackageInstaller(applications, auto_storage, data / "scratch")
    transfers = Transfers(storage_accounts, auto_storage.of)
    pools = Pools(store, NodeStore(db), catalog, settings, accounts, node_place=lambda node: node_place(provider, node),
                  applications=applications, authorization=authorization, image_sources=image_sources)
    agent = NodeAgent(provider, pools, lambda account: f"{_machines_base_url(settings, provider)}/batch/{account}",
                      transfers, packages, TaskUsers(db))
    task_store = TaskStore(db)
    jobs = Jobs(store, task_store, pools)
    tasks = Tasks(jobs, task_store, data / "outputs", applications)
    task_tokens = TaskTokens(identity, jobs)
    scheduler = Scheduler(jobs, tasks, pools, pools.nodes, task_store, provider, agent,
                          transfers=transfers, packages=packages, task_tokens=task_tokens)
    # the scheduler first: the allocator consults it (and pools reach the allocator through pools.on_work)
    allocator = Allocator(pools, pools.nodes, agent, settings, storage, scheduler)
    autoscaler = Autoscaler(pools, PoolMetrics(jobs, task_store, pools.nodes, provider,
                                               settings.autoscale_sample_seconds), settings)
    job_schedules = JobSchedules(store, jobs, settings)
    auto_pools = AutoPools(jobs, pools, store)
    # Deleting a Batch account deletes what is in it: what makes jobs first, what they run on after.
    for delete_all in (job_schedules.delete_all, jobs.delete_all, pools.delete_all, applications.delete_all,
                       lambda account: authorization.delete_below(account.id)):
        accounts.on_delete(delete_all)

    # Deleting a resource group deletes what is in it, dependents first.
    groups.on_delete(accounts.delete_in_group)  # pools may use the group's images
    groups.on_delete(lambda subscription, group: authorization.delete_below(
        f"/subscriptions/{subscription}/resourceGroups/{group}"))
    groups.on_delete(vms.delete_in_group)
    groups.on_delete(galleries.delete_in_group)
    for type_, delete in ((IMAGE_TYPE, images.delete), (SNAPSHOT_TYPE, disks.delete_snapshot), (DISK_TYPE, disks.delete)):
        groups.on_delete(_delete_all_of(store, type_, delete))

    services = Services(settings, db, store, identity, authorization, groups, layers, provider, note, catalog, storage, disks,
                        images, vms, galleries=galleries, accounts=accounts, pools=pools, allocator=allocator,
                        jobs=jobs, tasks=tasks, scheduler=scheduler, autoscaler=autoscaler,
                        job_schedules=job_schedules, auto_pools=auto_pools,
                        task_tokens=task_tokens,
                        management_pools=ManagementPools(accounts, pools), client_secret=client_secret,
                        auto_storage=auto_storage, applications=applications,
                        reserve=SpaceReserve(data / "reserve"))
    services.reserve.start()
    held = remove_unrecorded(provider, pools.nodes, store, disks)  # what a crash left
    restored = vms.restore()
    if restored:
        log.info("restored %d running virtual machines", restored)
    allocator.start(held)
    scheduler.start()
    autoscaler.start()
    job_schedules.start()
    auto_pools.start()
    storage.reclaim()
    return services


def issuer_bases(settings: Settings) -> tuple[str, ...]:
    """Where tokens are issued (read when checked: the port may be chosen at start)."""
    return (settings.base_url,) + ((f"https://{azure_names.LOGIN_HOST}",) if settings.azure_hostnames else ())


def _delete_all_of(store: ResourceStore, type_: str, delete):
    from .services.arm_ids import parse

    def delete_contents(subscription: str, resource_group: str) -> None:
        for resource in store.list(type=type_, subscription=subscription, resource_group=resource_group):
            delete(parse(resource.id))

    return delete_contents


def _register_host_image(catalog: Catalog, layers: LayerStore, data_dir) -> None:
    """The host's own OS, masked; rebuilt at each start so it always matches the host."""
    release = hostfs.host_os_release()
    distro = release.get("ID", "linux")
    version = release.get("VERSION_ID", "0")
    mask = hostfs.build_mask_layer(layers, [data_dir])
    catalog.register(BaseImage(
        publisher=PUBLISHER,
        offer=f"host-{distro}",
        sku=version,
        version="1.0.0",
        layers=hostfs.host_base_layers(mask),
        node_agent_sku_id=f"batch.node.{distro} {version}",
        description=f"This host's own operating system ({release.get('PRETTY_NAME', distro)}), read-only, "
                    "with private files masked",
        tags={"source": HOST},  # what image aliases with target "host" stand for
    ))
