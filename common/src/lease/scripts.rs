//! Lua sources, each prefixed with the shared prelude.

use std::sync::LazyLock;

use redis::Script;

macro_rules! lua {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            "\n",
            include_str!(concat!("lua/", $file))
        ))
    };
}

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub lease: Script,
    pub renew: Script,
    pub complete: Script,
    pub complete_lease: Script,
    pub release: Script,
    pub reap: Script,
    pub set_generation: Script,
    pub touch_agent: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: lua!("enqueue.lua"),
    lease: lua!("lease.lua"),
    renew: lua!("renew.lua"),
    complete: lua!("complete.lua"),
    complete_lease: lua!("complete_lease.lua"),
    release: lua!("release.lua"),
    reap: lua!("reap.lua"),
    set_generation: lua!("set_generation.lua"),
    touch_agent: lua!("touch_agent.lua"),
});
