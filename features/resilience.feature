Feature: Replenishment survives an unreliable world
  As the manager of a dark store
  I want refills to arrive exactly once even when messages are repeated or lost,
  the orchestrator is killed, or the stock cache is down
  So that I can trust the stock figures without checking the shelves

  Scenario: A message delivered twice is acted on once
    Given every message is delivered twice
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And the warehouse shipped it exactly once
    And the store took it in exactly once
    And "Riverside" shows 26 "oat milk" on hand, 6 reserved and 20 available
    And the warehouse has 84 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: A lost reply is asked for again once its deadline passes
    Given the next reply from a delivery worker is lost on the way
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends received
    And its timeline shows that the request was sent again
    And the replenishment reports no error
    And the warehouse shipped it exactly once
    And the store took it in exactly once
    And "Riverside" shows 26 "oat milk" on hand, 6 reserved and 20 available
    And the warehouse has 84 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: An orchestrator killed in the middle of a replenishment finishes it after a restart
    Given the delivery workers are stopped
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment is waiting for the warehouse
    When the orchestrator is killed and started again with its workers
    Then the replenishment ends received
    And the warehouse shipped it exactly once
    And the store took it in exactly once
    And "Riverside" shows 26 "oat milk" on hand, 6 reserved and 20 available
    And the warehouse has 84 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: Stock figures stay right while the stock cache is down
    Given the stock cache is down
    And "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order is accepted
    And "Riverside" shows 20 "oat milk" on hand, 3 reserved and 17 available
