Feature: Lists read from the replica, and never miss what was just written
  As an operator of the dark store network
  I want lists and look-ups served by a read replica, which may be a moment behind,
  without ever seeing a store I just created missing
  So that the primary keeps its strength for orders, and nobody is confused

  Scenario: A store just created is in the list its creator reads
    Given reads that may lag are served by the read replica
    When the operator creates the dark store "Riverside"
    Then the write answers with a consistency token
    And the operator's list of stores shows "Riverside"
    And "picker" holding a client key sees "Riverside" in the list of stores when it sends the operator's token

  Scenario: Reads fall back to the primary when the replica does not answer
    Given the read replica does not answer
    When the operator creates the dark store "Riverside"
    Then the operator's list of stores shows "Riverside"
    And the service is ready, with the replica reported down
