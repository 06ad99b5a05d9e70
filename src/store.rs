//! The few calls the function makes on its DynamoDB table that are not one item's (see `table` for what the items
//! hold): a query by partition key, every page of a query, a whole scan, items read consistently, one group's item,
//! and batched writes that retry what DynamoDB leaves unprocessed.

use std::time::Duration;

use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};

use crate::aws::{CallError, bounded_all};
use crate::table::{self, GROUP_SK, GroupInfo, Item, group_pk};

/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;
/// Rounds of retrying what BatchWriteItem left unprocessed (throttling) before giving up.
const UNPROCESSED_ROUNDS: u32 = 6;
/// Concurrent BatchWriteItem calls of one refresh.
const WRITE_CONCURRENCY: usize = 4;

/// Every item filed under one partition key.
pub async fn query(dynamodb: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Result<Vec<Item>, CallError> {
    every_page(table::in_partition(dynamodb.query().table_name(table), pk)).await
}

/// The items of every page a Query answers.
pub async fn every_page(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<Item>, CallError> {
    let mut pages = query.into_paginator().send();
    let mut items = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("Query", &e))?;
        items.extend(page.items().iter().cloned());
    }
    Ok(items)
}

/// The items of one partition with these sort keys (at most 100), read consistently; the ones the table has.
pub async fn get_many(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sks: &[String],
) -> Result<Vec<Item>, CallError> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let mut pending: Vec<Item> = sks.iter().map(|sk| table::key(pk, sk)).collect();
    let mut items = Vec::new();
    for _ in 0..UNPROCESSED_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let keys = KeysAndAttributes::builder()
            .set_keys(Some(std::mem::take(&mut pending)))
            .consistent_read(true)
            .build()
            .expect("keys are set");
        let output = dynamodb
            .batch_get_item()
            .request_items(table, keys)
            .send()
            .await
            .map_err(|e| CallError::new("BatchGetItem", &e))?;
        items.extend(
            output
                .responses()
                .and_then(|r| r.get(table))
                .cloned()
                .unwrap_or_default(),
        );
        pending = output
            .unprocessed_keys()
            .and_then(|u| u.get(table))
            .map(|k| k.keys().to_vec())
            .unwrap_or_default();
    }
    Ok(items)
}

/// The whole table. It holds one small item per registration in the region, so a refresh can afford to read it.
pub async fn scan(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>, CallError> {
    let mut pages = dynamodb.scan().table_name(table).into_paginator().send();
    let mut items = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CallError::new("Scan", &e))?;
        items.extend(page.items().iter().cloned());
    }
    Ok(items)
}

/// A target group's own item, if the index has it.
pub async fn get_group(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    arn: &str,
) -> Result<Option<GroupInfo>, CallError> {
    let output = dynamodb
        .get_item()
        .table_name(table)
        .set_key(Some(table::key(group_pk(arn), GROUP_SK)))
        .send()
        .await
        .map_err(|e| CallError::new("GetItem", &e))?;
    Ok(output.item().and_then(|item| GroupInfo::from_item(item).ok()))
}

pub fn put_request(item: Item) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("an item is set"),
        )
        .build()
}

pub fn delete_request(pk: String, sk: String) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(table::key(pk, sk)))
                .build()
                .expect("a key is set"),
        )
        .build()
}

/// How a batch of writes went.
#[derive(Debug, Default, PartialEq)]
pub struct Written {
    pub done: usize,
    pub errors: Vec<CallError>,
}

/// BatchWriteItem in chunks of 25, a few at a time, retrying what DynamoDB leaves unprocessed.
pub async fn write_all(dynamodb: &aws_sdk_dynamodb::Client, table: &str, requests: Vec<WriteRequest>) -> Written {
    let chunks: Vec<Vec<WriteRequest>> = requests.chunks(BATCH_WRITE_MAX).map(<[_]>::to_vec).collect();
    let results = bounded_all(WRITE_CONCURRENCY, chunks, |chunk| {
        let (dynamodb, table) = (dynamodb.clone(), table.to_owned());
        async move { write_chunk(&dynamodb, &table, chunk).await }
    })
    .await;
    let mut written = Written::default();
    for result in results {
        match result {
            Ok((done, None)) => written.done += done,
            Ok((done, Some(error))) => {
                written.done += done;
                written.errors.push(error);
            }
            Err(e) => written.errors.push(CallError::local("BatchWriteItem", e)),
        }
    }
    written
}

async fn write_chunk(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    mut pending: Vec<WriteRequest>,
) -> (usize, Option<CallError>) {
    let total = pending.len();
    let mut backoff = Duration::from_millis(50);
    for _ in 0..UNPROCESSED_ROUNDS {
        let output = dynamodb
            .batch_write_item()
            .request_items(table, pending.clone())
            .send()
            .await;
        match output {
            Err(e) => {
                return (total - pending.len(), Some(CallError::new("BatchWriteItem", &e)));
            }
            Ok(output) => {
                pending = output
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
                if pending.is_empty() {
                    return (total, None);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    let error = format!("left {} write(s) unprocessed", pending.len());
    (total - pending.len(), Some(CallError::local("BatchWriteItem", error)))
}
