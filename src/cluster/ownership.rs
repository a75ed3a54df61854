//! Ownership: which node numbers an external job (the first to claim it with
//! `SET buildcast:owner:<id> NX`), and passing work to the owner: worker messages
//! and cancel requests.

use redis::AsyncCommands;

use super::{CANCELS, Cluster, Route, owner_key};
use crate::job::JobId;

impl Cluster {
    /// Decides which node records an external job's events, claiming it for this
    /// node if nobody has.
    pub async fn route(&self, id: &JobId) -> Route {
        match self.journal.is_mirrored(id) {
            Some(true) => return Route::Elsewhere,
            Some(false) => return Route::Here,
            None => {}
        }
        if let Ok(Some(job)) = self.journal.job(id).await {
            return if job.node == self.node || job.node.is_empty() {
                Route::Here
            } else {
                Route::Elsewhere
            };
        }
        let ttl = self.history_ttl.as_secs();
        match self.conn().await {
            Ok(mut conn) => {
                let claimed: redis::RedisResult<bool> = redis::cmd("SET")
                    .arg(owner_key(id))
                    .arg(&self.node)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut conn)
                    .await
                    .map(|r| r.is_some());
                match claimed {
                    Ok(true) => Route::Here,
                    Ok(false) => {
                        let owner: Option<String> = conn.get(owner_key(id)).await.ok().flatten();
                        if owner.as_deref() == Some(self.node.as_str()) {
                            Route::Here
                        } else {
                            Route::Elsewhere
                        }
                    }
                    // Redis is away: record here rather than lose the events.
                    Err(_) => Route::Here,
                }
            }
            Err(_) => Route::Here,
        }
    }

    /// Asks the node that runs job `id` to cancel it.
    pub async fn forward_cancel(&self, id: &JobId) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        conn.publish(CANCELS, id.as_str()).await
    }

    /// Passes worker messages on to the job's owner, through its worker channel.
    pub async fn forward(&self, id: &JobId, messages: &[String]) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.publish(format!("job:{id}:updates"), message).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }
}
