//! What each subcommand does, on top of the library. The CLI glue is the one place that
//! uses `anyhow`.

use anyhow::{Context, bail};

use crate::{
    app,
    auth::{MintRequest, load_or_create_dev_key, mint_dev_token},
    backend::desktop::INSTALL_HINT,
    cli::{Cli, Command, ServeArgs, TokenArgs},
    clock::{Clock, SystemClock},
    config::{BackendKind, Config},
};

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Crds = cli.command {
        print!("{}", crate::crd::crds_yaml()?);
        return Ok(());
    }
    if let Command::Simulate(args) = &cli.command {
        // A simulation config need not be a broker config: the simulator reads it itself.
        return crate::sim::command::run(cli.config.as_deref(), args).map_err(anyhow::Error::msg);
    }
    let config = cli.load_config()?;
    match &cli.command {
        Command::Serve(args) => serve(config, args).await,
        Command::Token(args) => token(&config, args),
        Command::Crds | Command::Simulate(_) => unreachable!("handled before loading the config"),
        Command::CheckConfig => {
            check_config(&config);
            Ok(())
        }
    }
}

async fn serve(config: Config, args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.apply(config)?;
    let pools = config.pools.len();
    let running = app::start(config).await.context("failed to start cadbroker")?;
    println!(
        "cadbroker is serving the portal on http://{0}/ and the API on http://{0}/api/v1 (health and metrics on http://{1}), {pools} pools, {2} workstations; Ctrl-C stops it",
        running.public_addr, running.admin_addr, running.backend
    );
    running.run_until_signal().await;
    Ok(())
}

fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    let issuer = match &args.issuer {
        Some(name) => config.auth.issuer(name).with_context(|| format!("no issuer named '{name}' in the config"))?,
        None => config
            .auth
            .development_issuer()
            .context("the config has no development issuer; add one under [[auth.issuers]] with kind = \"development\"")?,
    };
    let mut groups = args.groups.clone();
    if args.admin {
        match config.auth.admin_groups.iter().next() {
            Some(g) => groups.push(g.clone()),
            None => bail!("--admin needs auth.adminGroups in the config"),
        }
    }
    let request = MintRequest {
        subject: args.user.clone(),
        name: args.name.clone(),
        groups: (!args.no_groups_claim).then(|| groups.into_iter().collect()),
        roles: args.roles.iter().cloned().collect(),
        ttl: args.ttl,
    };
    let path = issuer.effective_key_file();
    let key = load_or_create_dev_key(&path)
        .with_context(|| format!("failed to load the development key {}", path.display()))?;
    let token = mint_dev_token(issuer, &key, &request, SystemClock.now())?;
    println!("{token}");
    Ok(())
}

fn check_config(config: &Config) {
    println!("config is valid: backend {:?}, {} pool(s)", config.backend.kind, config.pools.len());
    if matches!(config.backend.kind, BackendKind::Auto | BackendKind::Desktop) {
        match config.backend.desktop.missing() {
            missing if missing.is_empty() => println!("  local desktops: all programs found"),
            missing => println!(
                "  local desktops: missing {} (install: {INSTALL_HINT}){}",
                missing.join(", "),
                if config.backend.kind == BackendKind::Auto { "; serve falls back to simulated" } else { "" }
            ),
        }
    }
    for pool in &config.pools {
        let c = pool.capacity;
        println!(
            "  {}: {} GPU(s) per workstation, min {} max {} warm {}",
            pool.name, pool.gpus_per_workstation, c.min, c.max, c.warm
        );
    }
}
