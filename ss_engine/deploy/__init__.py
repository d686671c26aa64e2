"""Deployment: the config file, the client<->server job protocol, local process launching."""
from .config import ConfigError, DeployConfig, load_config, local_config, write_config
from .launch import LocalDeployment, free_ports, launch_local, run_up

__all__ = ["ConfigError", "DeployConfig", "load_config", "local_config", "write_config",
           "LocalDeployment", "free_ports", "launch_local", "run_up"]
